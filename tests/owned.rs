//! Owned events (SPEC §5, issue 4): registration, delegation, end reasons, link vs monitor,
//! demand and catch-up.
#![allow(clippy::async_yields_async)]

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use common::{both, panic_text};
use futures::{FutureExt, StreamExt};
use scopebus::{
    DemandChange, EndReason, Producer, RegisterError, RegisterOptions, SendErrorKind, Sent,
    Subscription, TaskError, ctx,
};

#[derive(Debug, PartialEq)]
struct Tick(u32);

fn owned() -> Producer<Tick> {
    ctx::register::<Tick>(RegisterOptions::new()).expect("Tick is free on this bus")
}

/// Everything queued now, as values.
fn drain(sub: &mut Subscription<Tick>) -> Vec<u32> {
    sub.drain().iter().map(|tick| tick.0).collect()
}

/// The next item of `demand` if one is ready now.
fn ready(demand: &mut scopebus::Demand) -> Option<Option<DemandChange>> {
    demand.next().now_or_never()
}

#[test]
fn a_second_registration_on_the_same_bus_is_taken() {
    both(|| {
        ctx::scope("app").run(async {
            let producer = owned();
            match ctx::register::<Tick>(RegisterOptions::new().open()) {
                Err(RegisterError::Taken { owner }) => assert_eq!(owner.name(), "app"),
                other => panic!("expected Taken, got {other:?}"),
            }
            // On another bus, the same type is a different event.
            ctx::scope("component")
                .isolated()
                .run(async {
                    let local = owned();
                    let mut sub = ctx::subscribe::<Tick>();
                    local.send(Tick(1)).unwrap();
                    assert_eq!(drain(&mut sub), [1]);
                })
                .await;
            // After the registration ends, the type can be registered again.
            producer.unregister();
            let again = owned();
            assert!(again.is_registered());
        })
    });
}

#[test]
fn only_the_producer_sends_an_owned_type() {
    both(|| {
        ctx::scope("app").run(async {
            let mut sub = ctx::subscribe::<Tick>();
            let producer = owned();
            let refused = ctx::try_send(Tick(1)).unwrap_err();
            assert_eq!(refused.kind(), SendErrorKind::NotOwner);
            assert_eq!(refused.into_event(), Tick(1), "the event is handed back");
            let handle = ctx::current();
            assert_eq!(
                handle.try_send(Tick(2)).unwrap_err().kind(),
                SendErrorKind::NotOwner
            );
            assert_eq!(
                ctx::send_wait(Tick(3)).await.unwrap_err().kind(),
                SendErrorKind::NotOwner
            );
            let plain = std::panic::catch_unwind(AssertUnwindSafe(|| ctx::send(Tick(4))));
            let message = panic_text(&*plain.unwrap_err());
            assert!(
                message.contains("owned by a `Producer`") && message.contains("open()"),
                "the panic says what to do: {message}"
            );
            assert_eq!(producer.send(Tick(5)).unwrap(), Sent::Delivered(1));
            assert_eq!(drain(&mut sub), [5], "nothing refused was delivered");
            // A producer whose registration ended can no longer send.
            let stale = producer.clone();
            producer.unregister();
            assert!(!stale.is_registered());
            assert_eq!(
                stale.send(Tick(6)).unwrap_err().kind(),
                SendErrorKind::Unregistered
            );
            // And plain sends are allowed again.
            let mut late = ctx::subscribe::<Tick>();
            assert_eq!(ctx::send(Tick(7)), Sent::Delivered(1));
            assert_eq!(drain(&mut late), [7]);
        })
    });
}

#[test]
fn an_open_registration_accepts_plain_sends_too() {
    both(|| {
        ctx::scope("app").run(async {
            let producer = ctx::register::<Tick>(RegisterOptions::new().open()).unwrap();
            let mut sub = ctx::subscribe::<Tick>();
            producer.send(Tick(1)).unwrap();
            ctx::send(Tick(2));
            assert_eq!(drain(&mut sub), [1, 2]);
            drop(producer); // the last handle: the registration ends, the subscription too
            assert!(sub.next().await.is_none());
            assert_eq!(sub.end_reason(), Some(EndReason::Unregistered));
        })
    });
}

#[test]
fn clones_delegate_across_tasks_and_scopes_indistinguishably() {
    both(|| {
        ctx::scope("app").run(async {
            let mut sub = ctx::subscribe::<Tick>();
            let (owner_id, workers) = ctx::scope("owner")
                .run(async {
                    let producer = owned();
                    let mut workers = Vec::new();
                    for w in 0..3 {
                        let delegate = producer.clone();
                        workers.push(ctx::spawn(async move {
                            for i in 0..10 {
                                delegate.send(Tick(w * 100 + i)).unwrap();
                                tokio::task::yield_now().await;
                            }
                        }));
                    }
                    // A delegate in another scope sends as the owner too.
                    let delegate = producer.clone();
                    ctx::scope("elsewhere")
                        .run(async move { delegate.send(Tick(999)).unwrap() })
                        .await;
                    for worker in workers.drain(..) {
                        worker.await.unwrap();
                    }
                    (ctx::current().info().id(), producer)
                })
                .await;
            let received: Vec<_> = sub.drain();
            assert_eq!(received.len(), 31);
            assert!(
                received.iter().all(|e| e.origin().id() == owner_id),
                "every clone sends as the owner scope"
            );
            for w in 0..3 {
                let mine: Vec<u32> = received
                    .iter()
                    .map(|e| e.0)
                    .filter(|v| (w * 100..w * 100 + 10).contains(v))
                    .collect();
                assert_eq!(
                    mine,
                    (w * 100..w * 100 + 10).collect::<Vec<_>>(),
                    "in order"
                );
            }
            // The owner scope has exited: the registration ended with it.
            assert!(!workers.is_registered());
            assert!(sub.next().await.is_none());
            assert_eq!(sub.end_reason(), Some(EndReason::OwnerFinished));
        })
    });
}

/// Subscribes to `Tick` in the current scope, then runs `owner` (which registers `Tick` and
/// sends 1 and 2) and returns the subscription after the owner has ended.
async fn end_of<F: Future<Output = ()>>(owner: F) -> Subscription<Tick> {
    let sub = ctx::subscribe::<Tick>();
    owner.await;
    sub
}

async fn assert_ends(mut sub: Subscription<Tick>, reason: EndReason) {
    assert_eq!(drain(&mut sub), [1, 2], "what it held comes first");
    assert!(sub.next().await.is_none());
    assert_eq!(sub.end_reason(), Some(reason));
}

#[test]
fn each_cause_ends_the_stream_with_its_reason() {
    both(|| {
        ctx::scope("app").run(async {
            // Explicit unregister.
            let sub = end_of(async {
                let producer = owned();
                producer.send(Tick(1)).unwrap();
                producer.send(Tick(2)).unwrap();
                producer.unregister();
            })
            .await;
            assert_ends(sub, EndReason::Unregistered).await;

            // The last handle dropped (a clone is still alive until the end of the block).
            let sub = end_of(async {
                let producer = owned();
                let clone = producer.clone();
                producer.send(Tick(1)).unwrap();
                drop(producer);
                clone.send(Tick(2)).unwrap();
            })
            .await;
            assert_ends(sub, EndReason::Unregistered).await;

            // The owner scope finishes normally (the producer handle outlives it).
            let mut kept = None;
            let sub = end_of(ctx::scope("owner").run(async {
                let producer = owned();
                producer.send(Tick(1)).unwrap();
                producer.send(Tick(2)).unwrap();
                kept = Some(producer);
            }))
            .await;
            assert_ends(sub, EndReason::OwnerFinished).await;
            assert!(!kept.unwrap().is_registered());

            // The owner scope fails.
            let sub = end_of(async {
                let failed = AssertUnwindSafe(ctx::scope("owner").run(async {
                    let producer = owned();
                    producer.send(Tick(1)).unwrap();
                    producer.send(Tick(2)).unwrap();
                    ctx::spawn(async { panic!("sensor broke") });
                    std::future::pending::<()>().await;
                }))
                .catch_unwind()
                .await;
                assert_eq!(panic_text(&*failed.unwrap_err()), "sensor broke");
            })
            .await;
            assert_ends(sub, EndReason::OwnerFailed).await;

            // The owner scope is cancelled (its `run` future dropped).
            let sub = end_of(async {
                let mut owner = pin!(ctx::scope("owner").run(async {
                    let producer = owned();
                    producer.send(Tick(1)).unwrap();
                    producer.send(Tick(2)).unwrap();
                    std::future::pending::<()>().await;
                }));
                std::future::poll_fn(|cx| {
                    assert!(owner.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            })
            .await;
            assert_ends(sub, EndReason::OwnerCancelled).await;
        })
    });
}

/// The linked and the monitored consumer of one failing producer.
async fn link_and_monitor(fail: bool) -> (Result<usize, TaskError>, Option<EndReason>, usize) {
    let seen = Arc::new(AtomicUsize::new(0));
    let mut linked_sub = ctx::subscription::<Tick>().linked().subscribe();
    let counter = seen.clone();
    let linked = ctx::spawn(async move {
        let mut n = 0;
        while linked_sub.next().await.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
            n += 1;
        }
        n
    });
    let mut monitored = ctx::subscribe::<Tick>();
    let monitor = ctx::spawn(async move {
        while monitored.next().await.is_some() {}
        monitored.end_reason()
    });
    let owner = AssertUnwindSafe(ctx::scope("producer").run(async move {
        let producer = owned();
        for i in 0..3 {
            producer.send(Tick(i)).unwrap();
        }
        if fail {
            panic!("producer crashed");
        }
    }))
    .catch_unwind()
    .await;
    assert_eq!(owner.is_err(), fail);
    let reason = monitor.await.unwrap();
    (linked.await, reason, seen.load(Ordering::SeqCst))
}

#[test]
fn a_linked_consumer_is_cancelled_when_the_producer_fails() {
    both(|| {
        ctx::scope("app").run(async {
            let (linked, monitored, seen) = link_and_monitor(true).await;
            assert_eq!(linked, Err(TaskError::Cancelled), "linked: cancelled");
            assert_eq!(seen, 3, "after the events it held");
            assert_eq!(
                monitored,
                Some(EndReason::OwnerFailed),
                "monitored: told why"
            );
        })
    });
}

#[test]
fn a_linked_consumer_ends_normally_when_the_producer_ends_normally() {
    both(|| {
        ctx::scope("app").run(async {
            let (linked, monitored, seen) = link_and_monitor(false).await;
            assert_eq!(linked, Ok(3));
            assert_eq!(seen, 3);
            // The producer was dropped at the end of the owner's body: a plain unregister.
            assert_eq!(monitored, Some(EndReason::Unregistered));
        })
    });
}

#[test]
fn a_linked_subscription_read_outside_a_task_ends_with_its_reason() {
    both(|| {
        ctx::scope("app").run(async {
            let mut sub = ctx::subscription::<Tick>().linked().subscribe();
            let _ = AssertUnwindSafe(ctx::scope("producer").run(async {
                let producer = owned();
                producer.send(Tick(1)).unwrap();
                panic!("producer crashed");
            }))
            .catch_unwind()
            .await;
            assert_eq!(drain(&mut sub), [1]);
            assert!(
                sub.next().await.is_none(),
                "the body is not a task: no cancellation"
            );
            assert_eq!(sub.end_reason(), Some(EndReason::OwnerFailed));
        })
    });
}

#[test]
fn demand_starts_once_and_stops_once_when_subscribers_are_dropped() {
    both(|| {
        ctx::scope("app").run(async {
            let producer = owned();
            let mut demand = producer.demand();
            assert_eq!(ready(&mut demand), None, "no demand yet: nothing to say");
            let a = ctx::subscribe::<Tick>();
            let b = ctx::subscribe::<Tick>();
            assert_eq!(producer.subscribers(), 2);
            assert_eq!(demand.next().await, Some(DemandChange::Started));
            assert_eq!(ready(&mut demand), None, "one Started for two subscribers");
            drop(a);
            assert_eq!(ready(&mut demand), None, "b still wants it");
            drop(b);
            assert_eq!(demand.next().await, Some(DemandChange::Stopped));
            assert_eq!(ready(&mut demand), None);
            // A watcher made while there is demand starts with `Started`.
            let _c = ctx::subscribe::<Tick>();
            let mut late = producer.demand();
            assert_eq!(late.next().await, Some(DemandChange::Started));
            assert_eq!(demand.next().await, Some(DemandChange::Started));
            // Taps are not demand; a multi-type subscription naming the type is.
            let tap = ctx::tap().subscribe();
            assert_eq!(producer.subscribers(), 1);
            drop(tap);
            // The registration ends: the demand streams end.
            producer.unregister();
            assert_eq!(demand.next().await, None);
            assert_eq!(late.next().await, None);
        })
    });
}

#[test]
fn demand_stops_once_when_subscribers_leave_by_scope_exit_and_by_panic() {
    both(|| {
        ctx::scope("app").run(async {
            let producer = owned();
            let mut demand = producer.demand();
            // Two subscribers in a scope that ends normally.
            ctx::scope("viewers")
                .run(async {
                    let _a = ctx::subscribe::<Tick>();
                    let _b = ctx::subscribe_many().with::<Tick>().subscribe();
                    ctx::spawn(async move {
                        let _a = _a;
                        let _b = _b;
                        tokio::task::yield_now().await;
                    });
                })
                .await;
            assert_eq!(demand.next().await, Some(DemandChange::Started));
            assert_eq!(demand.next().await, Some(DemandChange::Stopped));
            assert_eq!(ready(&mut demand), None);
            // Two subscribers whose task panics (the scope fails and is caught here).
            let failed = AssertUnwindSafe(ctx::scope("crashy").run(async {
                let mut a = ctx::subscribe::<Tick>();
                let mut b = ctx::subscribe::<Tick>();
                ctx::spawn(async move {
                    let _ = a.next().await;
                    let _ = b.next().await;
                    panic!("viewer crashed");
                });
                std::future::pending::<()>().await;
            }))
            .catch_unwind();
            let sender = async {
                producer.send(Tick(1)).unwrap();
            };
            let (failed, ()) = futures::future::join(failed, sender).await;
            assert!(failed.is_err());
            assert_eq!(demand.next().await, Some(DemandChange::Started));
            assert_eq!(demand.next().await, Some(DemandChange::Stopped));
            assert_eq!(ready(&mut demand), None, "exactly one of each");
            assert_eq!(producer.subscribers(), 0);
        })
    });
}

#[test]
fn catch_up_gives_new_subscribers_the_last_n_first() {
    both(|| {
        ctx::scope("app").run(async {
            let producer = ctx::register::<Tick>(RegisterOptions::new().retain(2)).unwrap();
            for i in 1..=3 {
                producer.send(Tick(i)).unwrap();
            }
            let mut late = ctx::subscribe::<Tick>();
            producer.send(Tick(4)).unwrap();
            assert_eq!(drain(&mut late), [2, 3, 4], "the last 2, then live, no gap");
            assert_eq!(ctx::stats().of::<Tick>().unwrap().retained, 2);
            // The catch-up goes with the registration.
            producer.unregister();
            assert_eq!(ctx::stats().of::<Tick>().unwrap().retained, 0);
            let producer = owned();
            producer.send(Tick(5)).unwrap();
            let mut fresh = ctx::subscribe::<Tick>();
            producer.send(Tick(6)).unwrap();
            assert_eq!(drain(&mut fresh), [6], "no stale catch-up");
        })
    });
}

#[test]
fn registering_outside_a_scope_or_on_a_closed_bus_is_an_error() {
    assert!(matches!(
        ctx::register::<Tick>(RegisterOptions::new()),
        Err(RegisterError::NoScope)
    ));
    both(|| async {
        let late = ctx::scope("app")
            .run(async {
                // The bus is marked closed before the scope's subscriptions end, so once this
                // stream has ended the bus is closed (on a multi-thread runtime the task may
                // otherwise start before the body has even returned).
                let mut ended = ctx::subscribe::<Tick>();
                ctx::spawn(async move {
                    while ended.next().await.is_some() {}
                    ctx::register::<Tick>(RegisterOptions::new()).err()
                })
            })
            .await;
        let error = late.await.unwrap();
        assert!(matches!(error, Some(RegisterError::Closed)), "{error:?}");
        assert_eq!(error.unwrap().to_string(), "the bus is closed");
    });
}

#[test]
fn a_demand_loop_in_the_owner_ends_by_itself_when_the_bus_closes() {
    both(|| async {
        let task = ctx::scope("app")
            .run(async {
                let producer = owned();
                let mut demand = producer.demand();
                let _viewer = ctx::subscribe::<Tick>();
                // The usual producer loop, as a task of the bus's owner: the scope waits for
                // it, so it must end when the bus closes rather than wait forever.
                ctx::spawn(async move {
                    let mut changes = Vec::new();
                    while let Some(change) = demand.next().await {
                        changes.push(change);
                    }
                    let after = producer.send(Tick(1)).unwrap_err().kind();
                    (changes, after)
                })
            })
            .await;
        let (changes, after) = task.await.unwrap();
        assert_eq!(changes.first(), Some(&DemandChange::Started));
        assert_eq!(after, SendErrorKind::Closed);
    });
}
