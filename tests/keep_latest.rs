//! Keep-latest subscriptions (SPEC §4), which share one "latest" cell per type: each reader gets
//! the newest event it has not read, knows how many it skipped, and the bus counts every
//! superseded event exactly once — whatever the number of readers and their pace, through
//! replay, ends and departures.

// Scopes here sometimes return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use common::{DropCounter, Guard, both};
use futures::StreamExt;
use scopebus::{EndReason, Producer, RegisterOptions, TryNextError, ctx};

#[derive(Debug, PartialEq)]
struct Ev(u32);

fn superseded() -> u64 {
    ctx::stats().of::<Ev>().map_or(0, |stats| stats.superseded)
}

#[test]
fn readers_at_different_paces_each_see_their_own_gaps_and_the_bus_counts_them_all() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut fast = ctx::subscription::<Ev>().keep_latest().subscribe();
                let mut slow = ctx::subscription::<Ev>().keep_latest().subscribe();
                let mut all = ctx::subscribe::<Ev>();
                assert!(fast.is_empty());
                assert_eq!(fast.try_next().unwrap_err(), TryNextError::Empty);
                for round in 0..10u32 {
                    for i in 0..5 {
                        ctx::send(Ev(round * 5 + i));
                    }
                    assert_eq!(fast.len(), 1);
                    // `dropped` includes what was superseded since the last read.
                    assert_eq!(fast.dropped(), u64::from(round + 1) * 4);
                    let newest = fast.try_next().unwrap();
                    assert_eq!(newest.0, round * 5 + 4);
                    assert_eq!(fast.missed(), 4);
                    assert!(fast.is_empty());
                }
                assert_eq!(slow.dropped(), 49);
                assert_eq!(slow.drain().iter().map(|e| e.0).collect::<Vec<_>>(), [49]);
                assert_eq!(slow.missed(), 49);
                assert_eq!(
                    all.drain().len(),
                    50,
                    "the default subscription loses nothing"
                );
                let stats = ctx::stats();
                let ev = stats.of::<Ev>().unwrap();
                assert_eq!(ev.superseded, fast.dropped() + slow.dropped());
                assert_eq!(
                    (ev.superseded, fast.dropped(), slow.dropped()),
                    (89, 40, 49)
                );
                assert_eq!(ev.delivered, 50 * 3);
                assert_eq!(ev.subscriptions, 3);
            })
            .await;
    });
}

#[test]
fn a_reader_that_leaves_with_an_unread_event_stops_counting_and_frees_it() {
    both(|| async {
        let payloads = DropCounter::default();
        let seen = payloads.clone();
        ctx::scope("bus")
            .run(async move {
                let mut stays = ctx::subscription::<Guard>().keep_latest().subscribe();
                let leaves = ctx::subscription::<Guard>().keep_latest().subscribe();
                ctx::send(seen.guard());
                ctx::send(seen.guard());
                assert_eq!(seen.live(), 1, "the replaced event is freed at once");
                drop(leaves);
                ctx::send(seen.guard());
                let stats = ctx::stats();
                let guard = stats.of::<Guard>().unwrap();
                // 2 superseded by the second send, 1 by the third (the reader that left no
                // longer counts).
                assert_eq!(guard.superseded, 3);
                assert_eq!(guard.subscriptions, 1);
                assert!(stays.next().await.is_some());
                assert_eq!(stays.missed(), 2);
                drop(stays);
                assert_eq!(
                    seen.live(),
                    0,
                    "the last reader gone, the cell holds nothing"
                );
            })
            .await;
        assert_eq!(payloads.dropped(), 3);
    });
}

#[test]
fn replay_starts_from_the_newest_retained_event() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                ctx::retain::<Ev>(5);
                for i in 1..=5 {
                    ctx::send(Ev(i));
                }
                // The first reader of the cell (it was empty) and a second one (it was not).
                let mut first = ctx::subscription::<Ev>().keep_latest().replay().subscribe();
                let mut second = ctx::subscription::<Ev>().keep_latest().replay().subscribe();
                let mut live_only = ctx::subscription::<Ev>().keep_latest().subscribe();
                for sub in [&mut first, &mut second] {
                    assert_eq!(sub.try_next().unwrap().0, 5);
                    assert_eq!(
                        sub.missed(),
                        0,
                        "older retained events were never sent to it"
                    );
                }
                assert!(
                    live_only.is_empty(),
                    "without replay: only what is sent later"
                );
                ctx::send(Ev(6));
                let mut third = ctx::subscription::<Ev>().keep_latest().replay().subscribe();
                ctx::send(Ev(7));
                assert_eq!(first.try_next().unwrap().0, 7);
                assert_eq!(first.missed(), 1);
                assert_eq!(live_only.try_next().unwrap().0, 7);
                assert_eq!(live_only.missed(), 1);
                assert_eq!(third.try_next().unwrap().0, 7);
                assert_eq!(third.missed(), 1, "the replayed 6 was superseded");
                // 6 superseded for first, second, live_only; 6 for third (replayed).
                assert_eq!(superseded(), 4);
                assert_eq!(second.dropped(), 1, "6 was superseded, 7 is pending");
            })
            .await;
    });
}

#[test]
fn a_reader_ended_by_its_scope_yields_what_it_held_and_nothing_sent_after() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut sub = ctx::scope("inner")
                    .run(async {
                        let sub = ctx::subscription::<Ev>().keep_latest().subscribe();
                        ctx::send(Ev(1));
                        ctx::send(Ev(2));
                        sub
                    })
                    .await;
                // The nested scope shares the bus: these reach other subscribers, not `sub`.
                let mut other = ctx::subscription::<Ev>().keep_latest().subscribe();
                ctx::send(Ev(3));
                assert_eq!(sub.len(), 1);
                assert_eq!(sub.next().await.unwrap().0, 2, "held before its end");
                assert_eq!(sub.missed(), 1);
                assert!(sub.next().await.is_none());
                assert_eq!(sub.end_reason(), Some(EndReason::ScopeFinished));
                assert_eq!(sub.dropped(), 1);
                assert_eq!(
                    sub.try_next().unwrap_err(),
                    TryNextError::Ended(EndReason::ScopeFinished)
                );
                assert_eq!(other.next().await.unwrap().0, 3);

                // Ended with nothing unread: ends at once.
                let mut empty = ctx::scope("inner")
                    .run(async { ctx::subscription::<Ev>().keep_latest().subscribe() })
                    .await;
                assert!(empty.next().await.is_none());
                assert_eq!(empty.end_reason(), Some(EndReason::ScopeFinished));
            })
            .await;
    });
}

#[test]
fn a_reader_parked_in_a_task_wakes_for_each_newer_event_and_at_the_end() {
    both(|| async {
        let got = ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscription::<Ev>().keep_latest().subscribe();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let reader = ctx::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(event) = sub.next().await {
                        got.push(event.0);
                        tx.send(()).unwrap();
                    }
                    (got, sub.end_reason())
                });
                for i in 0..20 {
                    ctx::send(Ev(i));
                    // Wait until the reader took it: each send then finds it parked.
                    rx.recv().await.unwrap();
                }
                reader
            })
            .await;
        let (got, reason) = got.await.unwrap();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(reason, Some(EndReason::ScopeFinished));
    });
}

#[test]
fn the_end_of_a_registration_ends_keep_latest_readers_after_what_they_held() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut sub = ctx::subscription::<Ev>().keep_latest().subscribe();
                let mut linked = ctx::subscription::<Ev>().keep_latest().linked().subscribe();
                ctx::scope("owner")
                    .run(async {
                        let producer: Producer<Ev> =
                            ctx::register::<Ev>(RegisterOptions::new()).unwrap();
                        producer.send(Ev(1)).unwrap();
                        producer.send(Ev(2)).unwrap();
                        std::mem::forget(producer.clone()); // outlives the scope: ended by it
                    })
                    .await;
                assert_eq!(sub.next().await.unwrap().0, 2);
                assert!(sub.next().await.is_none());
                assert_eq!(sub.end_reason(), Some(EndReason::OwnerFinished));
                // Read outside a task, a linked subscription ends with its reason.
                assert_eq!(linked.next().await.unwrap().0, 2);
                assert!(linked.next().await.is_none());
                assert_eq!(linked.end_reason(), Some(EndReason::OwnerFinished));
            })
            .await;
    });
}

/// An event whose `Drop` looks at the bus (it takes every topic's lock): it must never be
/// dropped while the library holds one.
struct Inspecting(u32);

impl Drop for Inspecting {
    fn drop(&mut self) {
        if ctx::try_current().is_some() {
            let _ = ctx::stats();
        }
    }
}

#[test]
fn replaced_and_forgotten_events_are_dropped_with_no_lock_held() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut a = ctx::subscription::<Inspecting>().keep_latest().subscribe();
                let b = ctx::subscription::<Inspecting>().keep_latest().subscribe();
                for i in 0..10 {
                    ctx::send(Inspecting(i)); // each replaces the last
                }
                assert_eq!(a.try_next().unwrap().0, 9);
                drop(a);
                drop(b); // the last reader: the cell lets go of 9
                let c = ctx::scope("inner")
                    .run(async {
                        let c = ctx::subscription::<Inspecting>().keep_latest().subscribe();
                        ctx::send(Inspecting(10));
                        c
                    })
                    .await;
                drop(c); // ended, holding 10
            })
            .await;
    });
}

#[test]
fn replay_joins_a_cell_whose_readers_have_seen_nothing_yet() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                ctx::retain::<Ev>(3);
                for i in 1..=3 {
                    ctx::send(Ev(i));
                }
                // A keep-latest reader without replay: nothing for it yet.
                let mut plain = ctx::subscription::<Ev>().keep_latest().subscribe();
                // Then one with replay, before anything else is sent.
                let mut replaying = ctx::subscription::<Ev>().keep_latest().replay().subscribe();
                assert_eq!(
                    replaying.try_next().unwrap().0,
                    3,
                    "the newest retained event"
                );
                assert!(plain.is_empty(), "sent before it subscribed");
                ctx::send(Ev(4));
                assert_eq!(plain.try_next().unwrap().0, 4);
                assert_eq!(replaying.try_next().unwrap().0, 4);
                assert_eq!((plain.missed(), replaying.missed()), (0, 0));
                assert_eq!(superseded(), 0);
            })
            .await;
    });
}
