//! Delivery control (SPEC §4): bounded subscriptions, keep-latest, lossy vs critical drops, the
//! drop callback, visible gaps, non-blocking reads. Cases modelled on seed 002's own tests.

// Scopes here sometimes return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use std::sync::{Arc, Mutex};

use common::both;
use futures::StreamExt;
use scopebus::{DropReport, EndReason, Overflow, TryNextError, ctx};

#[derive(Debug, PartialEq)]
struct Ev(u32);

fn values(events: &[scopebus::Envelope<Ev>]) -> Vec<u32> {
    events.iter().map(|e| e.0).collect()
}

type Reports = Arc<Mutex<Vec<DropReport>>>;

fn recording() -> (Reports, impl Fn(&DropReport) + Send + Sync + 'static) {
    let reports = Reports::default();
    let sink = reports.clone();
    (reports, move |report: &DropReport| {
        sink.lock().unwrap().push(report.clone())
    })
}

#[test]
fn lossy_capacity_one_counts_nine_observability_drops_and_no_callback() {
    both(|| async {
        let (reports, callback) = recording();
        ctx::scope("bus")
            .on_drop(callback)
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::DropNewest)
                    .lossy()
                    .name("commentator")
                    .subscribe();
                for i in 0..10 {
                    ctx::send(Ev(i));
                }
                let stats = ctx::stats();
                assert_eq!(stats.dropped_lossy, 9);
                assert_eq!(stats.dropped_critical, 0);
                assert_eq!(sub.dropped(), 9);
                assert_eq!(values(&sub.drain()), [0], "drop-newest keeps the first");
            })
            .await;
        assert!(
            reports.lock().unwrap().is_empty(),
            "lossy drops raise no alarm"
        );
    });
}

#[test]
fn critical_capacity_one_counts_nine_drops_and_nine_callbacks() {
    both(|| async {
        let (reports, callback) = recording();
        ctx::scope("bus")
            .on_drop(callback)
            .run(async {
                let sub = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::DropNewest)
                    .name("reconciler")
                    .subscribe();
                let mut counts = Vec::new();
                for i in 0..10 {
                    counts.push(ctx::send(Ev(i)).delivered());
                }
                assert_eq!(
                    counts,
                    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    "a dropped send is not counted"
                );
                assert_eq!(ctx::stats().dropped_critical, 9);
                assert_eq!(ctx::stats().dropped_lossy, 0);
                drop(sub);
            })
            .await;
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 9);
        assert!(
            reports
                .iter()
                .all(|r| r.subscriber.as_deref() == Some("reconciler")
                    && r.capacity == 1
                    && r.event_type.ends_with("Ev"))
        );
    });
}

#[test]
fn drop_oldest_keeps_the_newest_and_marks_the_gap() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(3, Overflow::DropOldest)
                    .subscribe();
                for i in 0..10 {
                    assert_eq!(
                        ctx::send(Ev(i)).delivered(),
                        1,
                        "drop-oldest always queues the new event"
                    );
                }
                let first = sub.try_next().unwrap();
                assert_eq!(first.0, 7);
                assert_eq!(sub.missed(), 7, "events 0..=6 were lost just before 7");
                assert_eq!(sub.try_next().unwrap().0, 8);
                assert_eq!(sub.missed(), 0);
                assert_eq!(sub.try_next().unwrap().0, 9);
                assert_eq!(sub.try_next().unwrap_err(), TryNextError::Empty);
                assert_eq!(sub.dropped(), 7);
            })
            .await;
    });
}

#[test]
fn drop_newest_gap_sits_before_the_next_delivered_event() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(2, Overflow::DropNewest)
                    .subscribe();
                for i in 0..5 {
                    ctx::send(Ev(i)); // 0, 1 queued; 2, 3, 4 lost
                }
                assert_eq!(sub.next().await.unwrap().0, 0);
                assert_eq!(sub.missed(), 0);
                assert_eq!(sub.next().await.unwrap().0, 1);
                assert_eq!(sub.missed(), 0);
                ctx::send(Ev(5));
                assert_eq!(sub.next().await.unwrap().0, 5);
                assert_eq!(sub.missed(), 3, "2, 3 and 4 are missing before 5");
            })
            .await;
    });
}

#[test]
fn a_gap_at_the_end_is_reported_with_the_end() {
    both(|| async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx::scope("bus")
            .run(async move {
                let sub = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::DropNewest)
                    .subscribe();
                for i in 0..4 {
                    ctx::send(Ev(i));
                }
                tx.send(sub).unwrap();
            })
            .await;
        let mut sub = rx.await.unwrap();
        assert_eq!(sub.next().await.unwrap().0, 0);
        assert!(sub.next().await.is_none());
        assert_eq!(sub.missed(), 3, "lost after the last event, before the end");
        assert_eq!(sub.dropped(), 3);
        assert_eq!(sub.end_reason(), Some(EndReason::ScopeFinished));
        assert_eq!(
            sub.try_next().unwrap_err(),
            TryNextError::Ended(EndReason::ScopeFinished)
        );
    });
}

#[test]
fn keep_latest_after_a_burst_yields_only_the_last() {
    both(|| async {
        let (reports, callback) = recording();
        ctx::scope("bus")
            .on_drop(callback)
            .run(async {
                let mut state = ctx::subscription::<Ev>().keep_latest().subscribe();
                for i in 0..100 {
                    ctx::send(Ev(i));
                }
                assert_eq!(state.len(), 1);
                assert_eq!(state.next().await.unwrap().0, 99);
                assert_eq!(state.missed(), 99);
                assert_eq!(state.dropped(), 99, "superseded events are counted");
                let stats = ctx::stats();
                assert_eq!(stats.dropped_critical + stats.dropped_lossy, 0, "not drops");
                assert_eq!(stats.superseded, 99);
            })
            .await;
        assert!(reports.lock().unwrap().is_empty());
    });
}

#[test]
fn the_default_stays_unbounded_and_lossless_beside_bounded_ones() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut all = ctx::subscribe::<Ev>();
                let mut few = ctx::subscription::<Ev>()
                    .bounded(2, Overflow::DropNewest)
                    .subscribe();
                for i in 0..1000 {
                    ctx::send(Ev(i));
                }
                assert_eq!(all.drain().len(), 1000);
                assert_eq!(all.dropped(), 0);
                assert_eq!(few.drain().len(), 2);
                assert_eq!(few.dropped(), 998);
            })
            .await;
    });
}

#[test]
fn a_callback_that_sends_and_subscribes_does_not_deadlock() {
    both(|| async {
        struct Alarm(&'static str);
        ctx::scope("bus")
            .on_drop(|report| {
                // Runs with no bus lock held: using the bus from here is fine.
                let _watch = ctx::subscribe::<Alarm>();
                ctx::send(Alarm(report.event_type));
            })
            .run(async {
                let mut alarms = ctx::subscribe::<Alarm>();
                let _full = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::DropOldest)
                    .subscribe();
                ctx::send(Ev(1));
                ctx::send(Ev(2)); // evicts Ev(1): one critical drop, one alarm
                assert!(alarms.try_next().unwrap().0.ends_with("Ev"));
            })
            .await;
    });
}

#[test]
fn try_next_and_drain_read_without_waiting() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscribe::<Ev>();
                assert_eq!(sub.try_next().unwrap_err(), TryNextError::Empty);
                assert!(sub.drain().is_empty());
                for i in 0..5 {
                    ctx::send(Ev(i));
                }
                assert_eq!(sub.try_next().unwrap().0, 0);
                assert_eq!(values(&sub.drain()), [1, 2, 3, 4]);
                ctx::send(Ev(5));
                // And the stream waits when there is nothing: no busy loop needed.
                assert_eq!(sub.next().await.unwrap().0, 5);
            })
            .await;
    });
}

#[test]
fn bounded_builder_rejects_zero_capacity() {
    let result =
        std::panic::catch_unwind(|| ctx::subscription::<Ev>().bounded(0, Overflow::DropNewest));
    let message = common::panic_text(&*result.unwrap_err());
    assert!(message.contains("capacity of at least 1"), "{message}");
}

#[test]
fn on_drop_on_a_nested_scope_is_refused_with_an_explanation() {
    both(|| async {
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            ctx::scope("root").run(async {
                ctx::scope("nested").on_drop(|_| {}).run(async {}).await;
            }),
        ))
        .await;
        let message = common::panic_text(&*result.unwrap_err());
        assert!(message.contains("isolated()"), "{message}");
        // An isolated nested scope owns its bus: allowed.
        ctx::scope("root")
            .run(async {
                ctx::scope("own")
                    .isolated()
                    .on_drop(|_| {})
                    .run(async {})
                    .await;
            })
            .await;
    });
}

#[test]
fn named_subscriptions_on_a_handle() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let handle = ctx::current();
                let sub = ctx::subscription::<Ev>()
                    .name("audit")
                    .subscribe_on(&handle);
                assert_eq!(sub.name(), Some("audit"));
                assert_eq!(ctx::send(Ev(1)).delivered(), 1);
            })
            .await;
    });
}

#[test]
fn statistics_match_what_was_observed() {
    struct Unheard;
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut all = ctx::subscribe::<Ev>();
                let mut lossy = ctx::subscription::<Ev>()
                    .bounded(2, Overflow::DropNewest)
                    .lossy()
                    .subscribe();
                let mut critical = ctx::subscription::<Ev>()
                    .bounded(3, Overflow::DropOldest)
                    .subscribe();
                let mut latest = ctx::subscription::<Ev>().keep_latest().subscribe();
                let mut sent = 0;
                for i in 0..10 {
                    sent += 1;
                    ctx::send(Ev(i));
                }
                for _ in 0..4 {
                    ctx::send(Unheard);
                }
                // A type that had a subscriber, now gone: counted per type.
                drop(ctx::subscribe::<u8>());
                ctx::send(7u8);

                let observed = [all.drain(), lossy.drain(), critical.drain(), latest.drain()];
                let delivered_seen: usize = observed.iter().map(Vec::len).sum();
                let stats = ctx::stats();
                let ev = stats.of::<Ev>().unwrap();
                assert_eq!(ev.subscriptions, 4);
                assert_eq!(ev.sent, sent);
                // Delivered counts what was queued, including what keep-latest and drop-oldest
                // later replaced; what the readers saw plus what was replaced is the same.
                assert_eq!(
                    ev.delivered,
                    delivered_seen as u64 + ev.superseded + critical.dropped()
                );
                assert_eq!(ev.dropped_lossy, lossy.dropped());
                assert_eq!(ev.dropped_critical, critical.dropped());
                assert_eq!(ev.superseded, latest.dropped());
                assert_eq!(ev.undelivered, 0);
                let byte = stats.of::<u8>().unwrap();
                assert_eq!((byte.sent, byte.undelivered, byte.subscriptions), (1, 1, 0));
                assert!(
                    stats.of::<Unheard>().is_none(),
                    "never subscribed: bus totals only"
                );
                // Each critical drop also published one `EventDropped` (nobody listens to it):
                // system events are sends like any other.
                let dropped_events = critical.dropped();
                assert_eq!(stats.sent, 10 + 4 + 1 + dropped_events);
                assert_eq!(stats.undelivered, 4 + 1 + dropped_events);
                assert_eq!(
                    (lossy.dropped(), critical.dropped(), latest.dropped()),
                    (8, 7, 9)
                );
            })
            .await;
    });
}

#[test]
fn replay_gives_the_last_n_then_live_events() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                ctx::retain::<Ev>(2);
                for i in 0..3 {
                    assert_eq!(
                        ctx::send(Ev(i)).delivered(),
                        0,
                        "retained, but no subscription reached"
                    );
                }
                assert_eq!(ctx::stats().of::<Ev>().unwrap().retained, 2);
                let mut late = ctx::subscription::<Ev>().replay().subscribe();
                let mut plain = ctx::subscribe::<Ev>();
                ctx::send(Ev(3));
                assert_eq!(values(&late.drain()), [1, 2, 3], "eviction kept the last 2");
                assert_eq!(values(&plain.drain()), [3], "no replay unless asked");
                // A bounded replaying subscription takes the newest that fit.
                let mut small = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::DropNewest)
                    .replay()
                    .subscribe();
                assert_eq!(values(&small.drain()), [3]);
                assert_eq!(small.dropped(), 0);
                // Retention 0 frees what was kept.
                ctx::retain::<Ev>(0);
                assert_eq!(ctx::stats().of::<Ev>().unwrap().retained, 0);
                let mut none = ctx::subscription::<Ev>().replay().subscribe();
                assert!(none.drain().is_empty());
            })
            .await;
    });
}

#[test]
fn replay_under_a_concurrent_producer_has_no_gap_and_no_duplicate() {
    const TOTAL: u32 = 50_000;
    both(|| async {
        ctx::scope("bus")
            .run(async {
                ctx::retain::<Ev>(1_000);
                let mut started = ctx::subscribe::<Ev>();
                // The last event waits for the last join, so that every late subscription has
                // live events after its replay even if the producer outruns the joins.
                let (all_joined, last) = tokio::sync::oneshot::channel::<()>();
                let producer = ctx::spawn(async move {
                    for i in 0..TOTAL - 1 {
                        ctx::send(Ev(i));
                        if i % 64 == 63 {
                            tokio::task::yield_now().await;
                        }
                    }
                    last.await.unwrap();
                    ctx::send(Ev(TOTAL - 1));
                });
                // Join at nine points in the middle of the stream, while the producer runs.
                let mut late = Vec::new();
                for k in 1..10 {
                    while started.next().await.unwrap().0 < k * TOTAL / 10 {}
                    late.push(ctx::subscription::<Ev>().replay().subscribe());
                }
                all_joined.send(()).unwrap();
                producer.await.unwrap();
                for mut sub in late {
                    let seen: Vec<u32> = sub.drain().iter().map(|e| e.0).collect();
                    assert!(seen.len() > 1000, "replay plus live events");
                    assert!(
                        seen.windows(2).all(|w| w[1] == w[0] + 1),
                        "consecutive: no gap, no duplicate"
                    );
                    assert_eq!(*seen.last().unwrap(), TOTAL - 1);
                }
            })
            .await;
    });
}

#[test]
fn send_wait_loses_nothing_and_bounds_memory() {
    both(|| async {
        let consumer = ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(4, Overflow::Wait)
                    .subscribe();
                let mut observer = ctx::subscribe::<Ev>(); // unbounded: never waited for
                let consumer = ctx::spawn(async move {
                    let mut seen = Vec::new();
                    let mut most_queued = 0;
                    while let Some(event) = sub.next().await {
                        most_queued = most_queued.max(sub.len());
                        seen.push(event.0);
                        tokio::task::yield_now().await; // a slow reader
                    }
                    (seen, most_queued, sub.dropped())
                });
                // Several producers wait on the same full subscription.
                let producers: Vec<_> = (0..3u32)
                    .map(|p| {
                        ctx::spawn(async move {
                            for i in 0..500 {
                                ctx::send_wait(Ev(p * 1000 + i)).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for producer in producers {
                    producer.await.unwrap();
                }
                assert_eq!(observer.drain().len(), 1500);
                let stats = ctx::stats();
                assert_eq!(stats.dropped_critical + stats.dropped_lossy, 0);
                consumer
            })
            .await;
        let (seen, most_queued, dropped) = consumer.await.unwrap();
        assert_eq!(seen.len(), 1500, "nothing lost");
        assert_eq!(dropped, 0);
        assert!(
            most_queued <= 4,
            "never more than the capacity queued: {most_queued}"
        );
        for p in 0..3 {
            let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 1000 == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-producer order");
        }
    });
}

#[test]
fn plain_send_on_a_full_wait_subscription_drops_and_reports() {
    both(|| async {
        let (reports, callback) = recording();
        ctx::scope("bus")
            .on_drop(callback)
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::Wait)
                    .name("writer")
                    .subscribe();
                assert_eq!(ctx::send(Ev(1)).delivered(), 1);
                assert_eq!(
                    ctx::send(Ev(2)).delivered(),
                    0,
                    "send cannot wait: dropped, counted"
                );
                assert_eq!(sub.try_next().unwrap().0, 1);
                ctx::send(Ev(3));
                assert_eq!(sub.try_next().unwrap().0, 3);
                assert_eq!(sub.missed(), 1);
                assert_eq!(ctx::stats().dropped_critical, 1);
            })
            .await;
        assert_eq!(reports.lock().unwrap().len(), 1);
    });
}

#[test]
fn send_wait_is_cancel_safe() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut sub = ctx::subscription::<Ev>()
                    .bounded(1, Overflow::Wait)
                    .subscribe();
                ctx::send_wait(Ev(1)).await.unwrap();
                // Full: the second send waits; dropping it publishes nothing.
                let pending = ctx::send_wait(Ev(2));
                let timed_out =
                    tokio::time::timeout(std::time::Duration::from_millis(10), pending).await;
                assert!(timed_out.is_err(), "it was waiting");
                assert_eq!(sub.try_next().unwrap().0, 1);
                assert_eq!(
                    sub.try_next().unwrap_err(),
                    TryNextError::Empty,
                    "2 was never sent"
                );
                ctx::send_wait(Ev(3)).await.unwrap();
                assert_eq!(sub.try_next().unwrap().0, 3);
                assert_eq!(sub.missed(), 0);
            })
            .await;
    });
}

type Waiter = scopebus::TaskHandle<Result<scopebus::Sent, scopebus::SendError<Ev>>>;

/// In a scope: a full `Wait` subscription of capacity 1, and a task waiting to send `Ev(2)`.
async fn full_wait_subscription_with_a_waiter() -> (scopebus::Subscription<Ev>, Waiter) {
    let sub = ctx::subscription::<Ev>()
        .bounded(1, Overflow::Wait)
        .subscribe();
    ctx::send(Ev(1));
    let waiter = ctx::spawn(ctx::send_wait(Ev(2)));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "waiting for room");
    (sub, waiter)
}

#[test]
fn send_wait_reports_no_scope_and_a_bus_closing_while_waiting() {
    both(|| async {
        let err = ctx::send_wait(Ev(0)).await.unwrap_err();
        assert_eq!(err.kind(), scopebus::SendErrorKind::NoScope);
        assert_eq!(err.into_event(), Ev(0));

        // The subscription outlives the body, so it is ended by the scope's exit, after the
        // bus is marked closed: the waiter is released and finds the bus closed.
        let (waiter, _sub) = ctx::scope("bus")
            .run(async {
                let (sub, waiter) = full_wait_subscription_with_a_waiter().await;
                (waiter, sub)
            })
            .await;
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), scopebus::SendErrorKind::Closed);
    });
}

#[test]
fn dropping_a_full_wait_subscription_releases_waiting_senders() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let (sub, waiter) = full_wait_subscription_with_a_waiter().await;
                drop(sub); // the only reader goes away
                assert_eq!(
                    waiter.await.unwrap().unwrap(),
                    scopebus::Sent::Delivered(0),
                    "released, nobody to deliver to"
                );
            })
            .await;
    });
}
