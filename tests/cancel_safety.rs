//! Cancellation safety (issue 7): every `async` API of the crate, its future dropped at its
//! await point. What each one documents under "Cancel safety" is checked: nothing documented
//! as kept is lost, nothing is delivered twice, nothing stays registered.

mod common;

use std::time::Duration;

use common::both;
use futures::{FutureExt, StreamExt};
use scopebus::{DemandChange, Overflow, RegisterOptions, RequestOptions, Sent, ctx};

#[derive(Debug, PartialEq)]
struct Item(u32);

/// Subscriptions on the current bus, all types together.
fn subscriptions() -> u64 {
    ctx::stats()
        .types
        .iter()
        .map(|t| t.subscriptions as u64)
        .sum()
}

/// Polls `future` once (it must be pending), then drops it.
fn poll_once_and_drop<F: std::future::Future>(future: F) {
    assert!(future.now_or_never().is_none(), "expected a pending future");
}

#[test]
fn a_dropped_next_loses_nothing_and_repeats_nothing_under_every_policy() {
    both(|| async {
        ctx::scope("next")
            .run(async {
                let mut default = ctx::subscribe::<Item>();
                let mut bounded = ctx::subscription::<Item>()
                    .bounded(4, Overflow::DropOldest)
                    .subscribe();
                let mut latest = ctx::subscription::<Item>().keep_latest().subscribe();
                let mut many = ctx::subscribe_many().with::<Item>().subscribe();
                poll_once_and_drop(default.next());
                poll_once_and_drop(bounded.next());
                poll_once_and_drop(latest.next());
                poll_once_and_drop(many.next());
                ctx::send(Item(1));
                assert_eq!(*default.next().await.unwrap(), Item(1));
                assert_eq!(*bounded.next().await.unwrap(), Item(1));
                assert_eq!(*latest.next().await.unwrap(), Item(1));
                assert_eq!(
                    many.next().await.unwrap().downcast_ref::<Item>(),
                    Some(&Item(1))
                );
                assert!(default.try_next().is_err() && bounded.try_next().is_err());
                assert!(latest.try_next().is_err() && many.try_next().is_err());
            })
            .await;
    });
}

// ANCHOR: send_wait
#[test]
fn a_dropped_send_wait_publishes_nothing_and_leaves_nothing_waiting() {
    both(|| async {
        ctx::scope("wait")
            .run(async {
                let mut full = ctx::subscription::<Item>()
                    .bounded(1, Overflow::Wait)
                    .subscribe();
                ctx::send_wait(Item(1)).await.unwrap();
                // Full: the second waits for room. Dropped while waiting.
                poll_once_and_drop(ctx::send_wait(Item(2)));
                let producer = ctx::register::<(u8, Item)>(RegisterOptions::new()).unwrap();
                let mut owned = ctx::subscription::<(u8, Item)>()
                    .bounded(1, Overflow::Wait)
                    .subscribe();
                producer.send_wait((0, Item(1))).await.unwrap();
                poll_once_and_drop(producer.send_wait((0, Item(2))));
                // Room again: what was dropped was never published ...
                assert_eq!(*full.next().await.unwrap(), Item(1));
                assert_eq!(owned.next().await.unwrap().1, Item(1));
                assert!(full.try_next().is_err() && owned.try_next().is_err());
                // ... and nothing stale blocks the next ones.
                assert_eq!(ctx::send_wait(Item(3)).await.unwrap(), Sent::Delivered(1));
                assert_eq!(
                    producer.send_wait((0, Item(3))).await.unwrap(),
                    Sent::Delivered(1)
                );
                assert_eq!(*full.next().await.unwrap(), Item(3));
                assert_eq!(owned.next().await.unwrap().1, Item(3));
            })
            .await;
    });
}
// ANCHOR_END: send_wait

#[test]
fn a_dropped_request_abandons_its_answers_and_a_new_one_works() {
    both(|| async {
        struct Ask(u32);
        ctx::scope("ask")
            .run(async {
                let (release, released) = tokio::sync::watch::channel(false);
                ctx::respond::<Ask>("slow").answer(move |ask| {
                    let mut released = released.clone();
                    async move {
                        while !*released.borrow_and_update() {
                            released.changed().await.unwrap();
                        }
                        ask.0 * 2
                    }
                });
                let before = subscriptions();
                let options = || {
                    RequestOptions::new()
                        .expect(["slow"])
                        .timeout(Duration::from_secs(5))
                };
                poll_once_and_drop(ctx::request::<_, u32>(Ask(1), options()));
                // The abandoned request's reply subscription is gone with its future.
                assert_eq!(subscriptions(), before);
                release.send(true).unwrap(); // the first answer now comes, to nobody
                let answers = ctx::request::<_, u32>(Ask(2), options()).await.unwrap();
                let values: Vec<u32> = answers.iter().map(|a| **a.event()).collect();
                assert_eq!(values, [4], "only the live request's answer");
            })
            .await;
    });
}

#[test]
fn a_dropped_task_handle_await_leaves_the_task_running() {
    both(|| async {
        ctx::scope("handle")
            .run(async {
                let (go, gone) = tokio::sync::oneshot::channel::<()>();
                let mut handle = ctx::spawn(async move {
                    gone.await.unwrap();
                    7
                });
                poll_once_and_drop(&mut handle);
                go.send(()).unwrap();
                assert_eq!(handle.await, Ok(7));
            })
            .await;
    });
}

#[test]
fn a_dropped_demand_read_loses_no_change() {
    both(|| async {
        ctx::scope("demand")
            .run(async {
                let producer = ctx::register::<Item>(RegisterOptions::new()).unwrap();
                let mut demand = producer.demand();
                poll_once_and_drop(demand.next()); // no demand yet: pending
                let sub = ctx::subscribe::<Item>();
                assert_eq!(demand.next().await, Some(DemandChange::Started));
                poll_once_and_drop(demand.next());
                drop(sub);
                assert_eq!(demand.next().await, Some(DemandChange::Stopped));
            })
            .await;
    });
}

#[test]
fn a_dropped_cancelled_future_misses_no_signal() {
    both(|| async {
        ctx::scope("signal")
            .run(async {
                poll_once_and_drop(ctx::cancelled());
                ctx::shutdown(Duration::from_secs(5));
                ctx::cancelled().await; // raised meanwhile: completes at once
                assert!(ctx::is_cancelled());
            })
            .await;
    });
}

#[test]
fn a_dropped_run_aborts_its_tasks_which_the_enclosing_scope_waits_for() {
    both(|| async {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dropped = Arc::new(AtomicBool::new(false));
        let seen = dropped.clone();
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        ctx::scope("outer")
            .run(async move {
                let mut events = ctx::subscribe::<Item>();
                let flag = Flag(seen);
                let inner = ctx::scope("inner").run(async move {
                    ctx::spawn(async move {
                        let _flag = flag;
                        std::future::pending::<()>().await;
                    });
                    ctx::send(Item(1));
                    std::future::pending::<()>().await;
                });
                poll_once_and_drop(inner);
                // What the dropped scope sent before is kept by the outer subscription.
                assert_eq!(*events.next().await.unwrap(), Item(1));
            })
            .await;
        // The outer scope's exit waited for the aborted task: its future is gone.
        assert!(dropped.load(Ordering::SeqCst));
    });
}
