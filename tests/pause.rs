//! Pause / start (SPEC §5, issue 4): sends held in order in a bounded buffer, delivered on
//! `start()` to the subscriptions that exist then, before any later send; overflow counted and
//! reported; both idempotent.
#![allow(clippy::async_yields_async)]

mod common;

use std::sync::{Arc, Mutex};

use common::both;
use futures::StreamExt;
use scopebus::{DropReport, EventDropped, RegisterOptions, SendErrorKind, Sent, Subscription, ctx};

#[derive(Debug, PartialEq)]
struct Ev(u32);

#[derive(Debug, PartialEq)]
struct Other(u32);

fn values(sub: &mut Subscription<Ev>) -> Vec<u32> {
    sub.drain().iter().map(|e| e.0).collect()
}

#[test]
fn a_paused_bus_holds_sends_and_start_delivers_them_in_order_first() {
    both(|| {
        ctx::scope("app").paused().run(async {
            assert!(ctx::is_paused());
            let mut early = ctx::subscribe::<Ev>();
            assert_eq!(ctx::send(Ev(1)), Sent::Held);
            assert_eq!(
                ctx::send(Other(2)),
                Sent::Held,
                "types with no subscriber too"
            );
            assert_eq!(ctx::send(Ev(3)), Sent::Held);
            assert!(early.is_empty(), "held, not delivered");
            assert_eq!(ctx::stats().held, 3);
            // Subscriptions made before `start()` receive what was held.
            let mut late = ctx::subscribe::<Ev>();
            let mut everything = ctx::tap().subscribe();
            ctx::start();
            assert!(!ctx::is_paused());
            assert_eq!(
                ctx::send(Ev(4)),
                Sent::Delivered(3),
                "two typed subscriptions, a tap"
            );
            assert_eq!(values(&mut early), [1, 3, 4]);
            assert_eq!(values(&mut late), [1, 3, 4]);
            let order: Vec<&str> = everything
                .drain()
                .iter()
                .map(|e| e.type_name().rsplit("::").next().unwrap())
                .collect();
            assert_eq!(
                order,
                ["Ev", "Other", "Ev", "Ev"],
                "one bus order, send order"
            );
            let stats = ctx::stats();
            assert_eq!((stats.held, stats.dropped_held), (0, 0));
            assert_eq!(stats.of::<Ev>().unwrap().sent, 3, "counted when delivered");
        })
    });
}

#[test]
fn held_envelopes_keep_their_origin_and_send_time_and_are_numbered_on_delivery() {
    both(|| {
        ctx::scope("app").paused().run(async {
            let mut sub = ctx::subscribe::<Ev>();
            ctx::scope("sender").run(async { ctx::send(Ev(1)) }).await;
            let before_start = std::time::SystemTime::now();
            ctx::start();
            ctx::send(Ev(2));
            let got = sub.drain();
            assert_eq!(got[0].origin().name(), "sender");
            assert!(got[0].sent_at() <= before_start, "stamped when sent");
            assert!(got[0].seq() < got[1].seq());
        })
    });
}

#[test]
fn pause_and_start_are_idempotent() {
    both(|| {
        ctx::scope("app").run(async {
            let mut sub = ctx::subscribe::<Ev>();
            ctx::start(); // not paused: nothing to do
            assert_eq!(ctx::send(Ev(1)), Sent::Delivered(1));
            ctx::pause();
            ctx::pause();
            assert_eq!(ctx::send(Ev(2)), Sent::Held);
            ctx::start();
            ctx::start();
            assert_eq!(values(&mut sub), [1, 2], "delivered once");
            assert_eq!(ctx::send(Ev(3)), Sent::Delivered(1));
            assert_eq!(values(&mut sub), [3]);
            // A handle pauses and starts from anywhere.
            let handle = ctx::current();
            std::thread::spawn(move || handle.pause()).join().unwrap();
            assert!(ctx::current().is_paused());
            assert_eq!(ctx::send(Ev(4)), Sent::Held);
            ctx::current().start();
            assert_eq!(values(&mut sub), [4]);
        })
    });
}

#[test]
fn overflow_of_the_held_buffer_is_counted_and_reported() {
    both(|| async {
        let reports = Arc::new(Mutex::new(Vec::<DropReport>::new()));
        let seen = reports.clone();
        ctx::scope("app")
            .paused()
            .held_capacity(3)
            .on_drop(move |report| seen.lock().unwrap().push(report.clone()))
            .run(async {
                let mut sub = ctx::subscribe::<Ev>();
                let sent: Vec<Sent> = (0..5).map(|i| ctx::send(Ev(i))).collect();
                assert_eq!(
                    sent,
                    [
                        Sent::Held,
                        Sent::Held,
                        Sent::Held,
                        Sent::Dropped,
                        Sent::Dropped
                    ]
                );
                let stats = ctx::stats();
                assert_eq!((stats.held, stats.dropped_held), (3, 2));
                ctx::start();
                assert_eq!(values(&mut sub), [0, 1, 2], "the held ones, in order");
                // Not published as `EventDropped` (the full, paused bus would drop it too).
                let mut drops = ctx::subscribe::<EventDropped>();
                ctx::pause();
                for i in 10..14 {
                    ctx::send(Ev(i));
                }
                ctx::start();
                assert_eq!(values(&mut sub), [10, 11, 12]);
                assert!(drops.drain().is_empty());
                assert_eq!(ctx::stats().dropped_held, 3);
            })
            .await;
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 3, "one callback per dropped event");
        assert!(reports.iter().all(|r| {
            r.paused && r.subscriber.is_none() && r.capacity == 3 && r.event_type.ends_with("Ev")
        }));
    });
}

#[test]
fn send_wait_waits_for_start_instead_of_dropping() {
    both(|| {
        ctx::scope("app").paused().held_capacity(2).run(async {
            let mut sub = ctx::subscribe::<Ev>();
            assert_eq!(ctx::send_wait(Ev(1)).await.unwrap(), Sent::Held);
            assert_eq!(ctx::send_wait(Ev(2)).await.unwrap(), Sent::Held);
            let waiting = ctx::spawn(ctx::send_wait(Ev(3)));
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "the buffer is full: waiting");
            ctx::start();
            let sent = waiting.await.unwrap().unwrap();
            assert!(matches!(sent, Sent::Delivered(1) | Sent::Held), "{sent:?}");
            assert_eq!(values(&mut sub), [1, 2, 3], "nothing lost, in order");
            assert_eq!(ctx::stats().dropped_held, 0);
        })
    });
}

#[test]
fn a_bus_still_paused_at_the_end_delivers_what_it_held() {
    both(|| async {
        let got = ctx::scope("app")
            .paused()
            .run(async {
                let mut sub = ctx::subscribe::<Ev>();
                let reader = ctx::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(ev) = sub.next().await {
                        got.push(ev.0);
                    }
                    got
                });
                for i in 0..3 {
                    ctx::send(Ev(i));
                }
                reader // never started: the exit starts it
            })
            .await;
        assert_eq!(got.await.unwrap(), [0, 1, 2]);
    });
}

#[test]
fn ownership_is_checked_before_holding() {
    both(|| {
        ctx::scope("app").paused().run(async {
            let producer = ctx::register::<Ev>(RegisterOptions::new()).unwrap();
            let mut sub = ctx::subscribe::<Ev>();
            assert_eq!(
                ctx::try_send(Ev(1)).unwrap_err().kind(),
                SendErrorKind::NotOwner
            );
            assert_eq!(producer.send(Ev(2)).unwrap(), Sent::Held);
            ctx::start();
            assert_eq!(values(&mut sub), [2]);
        })
    });
}

#[test]
fn pausing_a_busy_bus_loses_nothing_and_keeps_the_order() {
    common::multi(async {
        ctx::scope("app")
            .held_capacity(10_000)
            .run(async {
                let mut sub = ctx::subscribe::<Ev>();
                let producer = ctx::spawn(async {
                    for i in 0..5_000 {
                        ctx::send_wait(Ev(i)).await.unwrap();
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                let toggler = ctx::spawn(async {
                    for _ in 0..200 {
                        ctx::pause();
                        tokio::task::yield_now().await;
                        ctx::start();
                        tokio::task::yield_now().await;
                    }
                });
                producer.await.unwrap();
                toggler.await.unwrap();
                ctx::start();
                let got = values(&mut sub);
                assert_eq!(got, (0..5_000).collect::<Vec<_>>());
            })
            .await;
    });
}
