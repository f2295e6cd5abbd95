//! Multi-type subscriptions and taps (SPEC §5 "Multi-type subscription"): one stream over
//! several types, or over every type of a bus, in bus sequence order.

// Scopes here sometimes return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use common::{both, multi};
use futures::StreamExt;
use scopebus::{AnyEnvelope, EndReason, Envelope, Overflow, ctx};

#[derive(Debug, PartialEq)]
struct A(u32);
#[derive(Debug, PartialEq)]
struct B(u32);
#[derive(Debug, PartialEq)]
struct C(u32);

#[test]
fn a_multi_type_subscription_gets_its_types_only_in_send_order() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let mut ab = ctx::subscribe_many().with::<A>().with::<B>().subscribe();
                let mut typed = ctx::subscribe::<A>();
                assert_eq!(ctx::send(A(1)).delivered(), 2);
                assert_eq!(ctx::send(C(2)).delivered(), 0, "C is not in the set");
                assert_eq!(ctx::send(B(3)).delivered(), 1);
                ctx::send(A(4));
                let got = ab.drain();
                let described: Vec<String> = got
                    .iter()
                    .map(|e| {
                        if let Some(a) = e.downcast_ref::<A>() {
                            format!("A{}", a.0)
                        } else {
                            format!("B{}", e.downcast_ref::<B>().unwrap().0)
                        }
                    })
                    .collect();
                assert_eq!(described, ["A1", "B3", "A4"]);
                assert!(got.windows(2).all(|w| w[0].seq() < w[1].seq()));
                // The same allocation as the typed subscriber's.
                let first: Envelope<A> = got[0].clone().downcast().ok().unwrap();
                assert!(Envelope::ptr_eq(&first, &typed.try_next().unwrap()));
                assert!(got[1].clone().downcast::<A>().is_err(), "a B is not an A");
                assert_eq!(got[0].origin().name(), "bus");
            })
            .await;
    });
}

#[test]
fn a_tap_sees_every_type_including_types_nobody_subscribed_to() {
    both(|| async {
        ctx::scope("bus")
            .run(async {
                let _typed = ctx::subscribe::<A>(); // a topic that exists before the tap
                let mut tap = ctx::tap().subscribe();
                ctx::send(A(1));
                ctx::send(B(2)); // never subscribed: the tap still sees it
                ctx::send("text");
                let _later = ctx::subscribe::<C>(); // a topic created after the tap
                ctx::send(C(3));
                let names: Vec<&str> = tap.drain().iter().map(AnyEnvelope::type_name).collect();
                assert_eq!(names.len(), 4);
                assert!(names[0].ends_with("::A") && names[1].ends_with("::B"));
                assert_eq!(names[2], "&str");
                assert!(names[3].ends_with("::C"));
            })
            .await;
    });
}

#[test]
fn a_tap_keeps_bus_order_across_types_with_concurrent_producers() {
    const PER: u32 = 20_000;
    multi(async {
        let (tap_seen, typed_seen) = ctx::scope("bus")
            .run(async {
                let mut tap = ctx::tap().subscribe();
                let mut a_only = ctx::subscribe::<A>();
                let tap_reader = ctx::spawn(async move {
                    let mut seqs = Vec::new();
                    while let Some(event) = tap.next().await {
                        // The tap also sees the library's system events (task spawned, ...).
                        let mine = if event.is::<A>() {
                            Some(true)
                        } else if event.is::<B>() {
                            Some(false)
                        } else {
                            None
                        };
                        seqs.push((event.seq(), mine));
                    }
                    seqs
                });
                let a_reader = ctx::spawn(async move {
                    let mut seqs = Vec::new();
                    while let Some(event) = a_only.next().await {
                        seqs.push(event.seq());
                    }
                    seqs
                });
                let pa = ctx::spawn(async {
                    for i in 0..PER {
                        ctx::send(A(i));
                        if i % 128 == 127 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                let pb = ctx::spawn(async {
                    for i in 0..PER {
                        ctx::send(B(i));
                        if i % 128 == 127 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                pa.await.unwrap();
                pb.await.unwrap();
                (tap_reader, a_reader)
            })
            .await;
        let tap_seen = tap_seen.await.unwrap();
        let typed_seen = typed_seen.await.unwrap();
        let ab = tap_seen.iter().filter(|(_, mine)| mine.is_some()).count();
        assert_eq!(ab as u32, 2 * PER, "the tap lost nothing");
        assert!(
            tap_seen.windows(2).all(|w| w[0].0 < w[1].0),
            "the tap sees bus sequence order across types"
        );
        let tap_a: Vec<u64> = tap_seen
            .iter()
            .filter(|(_, mine)| *mine == Some(true))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(tap_a, typed_seen, "A's order on the tap is A's one order");
    });
}

#[test]
fn multi_type_subscriptions_end_with_their_scope_and_detach_when_dropped() {
    both(|| async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx::scope("bus")
            .run(async move {
                let ab = ctx::subscribe_many().with::<A>().with::<B>().subscribe();
                let tap = ctx::tap().subscribe();
                assert_eq!(ctx::send(A(1)).delivered(), 2);
                drop(tap);
                assert_eq!(
                    ctx::send(A(2)).delivered(),
                    1,
                    "a dropped tap no longer counts"
                );
                tx.send(ab).unwrap();
            })
            .await;
        let mut ab = rx.await.unwrap();
        assert_eq!(ab.drain().len(), 2);
        assert!(ab.next().await.is_none());
        assert_eq!(ab.end_reason(), Some(EndReason::ScopeFinished));
        // Made on a closed bus: already ended, never hangs.
        let gone = ctx::scope("gone").run(async { ctx::current() }).await;
        drop(gone);
    });
}

#[test]
fn a_lossy_bounded_tap_counts_its_drops_and_raises_no_alarm() {
    both(|| async {
        let alarms = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = alarms.clone();
        ctx::scope("bus")
            .on_drop(move |_| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
            .run(async {
                let mut log = ctx::tap()
                    .bounded(2, Overflow::DropOldest)
                    .lossy()
                    .name("log")
                    .subscribe();
                for i in 0..5 {
                    ctx::send(A(i));
                    ctx::send(B(i));
                }
                let kept: Vec<bool> = log.drain().iter().map(|e| e.is::<A>()).collect();
                assert_eq!(kept, [true, false], "the newest two: A(4), B(4)");
                assert_eq!(log.missed(), 0);
                assert_eq!(log.dropped(), 8);
                assert_eq!(ctx::stats().dropped_lossy, 8);
                assert_eq!(log.name(), Some("log"));
            })
            .await;
        assert_eq!(alarms.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}
