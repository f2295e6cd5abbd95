//! Scope lifetime (SPEC §3): context in tasks, exit order, closed bus, failure, abort, drop.

// Scopes here often return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use common::{DropCounter, both, current, panic_text};
use futures::{FutureExt, StreamExt};
use scopebus::{EndReason, SendErrorKind, SpawnError, TaskError, ctx};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
struct Job(u32);

#[test]
fn spawned_tasks_carry_the_context() {
    both(|| async {
        ctx::scope("outer")
            .run(async {
                let name = ctx::spawn(async {
                    // A task spawned from a task is still in the scope.
                    ctx::spawn(async { ctx::current().info().name().to_owned() })
                        .await
                        .unwrap()
                });
                assert_eq!(name.await.unwrap(), "outer");
                let nested = ctx::scope("inner")
                    .run(async { ctx::spawn(async { ctx::current().info().name().to_owned() }) })
                    .await;
                assert_eq!(nested.await.unwrap(), "inner");
            })
            .await;
    });
}

#[test]
fn consumer_loops_drain_and_end_at_scope_exit() {
    both(|| async {
        let (count, reason) = ctx::scope("app")
            .run(async {
                let mut jobs = ctx::subscribe::<Job>();
                let consumer = ctx::spawn(async move {
                    let mut count = 0;
                    while let Some(job) = jobs.next().await {
                        assert_eq!(job.0, count);
                        count += 1;
                    }
                    (count, jobs.end_reason())
                });
                for i in 0..1000 {
                    ctx::send(Job(i));
                }
                consumer
            })
            .await
            .await
            .unwrap();
        assert_eq!(count, 1000, "everything sent before the exit is yielded");
        assert_eq!(reason, Some(EndReason::ScopeFinished));
    });
}

#[test]
fn run_returns_after_tasks_and_waits_for_tasks_spawned_late() {
    both(|| async {
        let finished = Arc::new(AtomicUsize::new(0));
        let seen = finished.clone();
        ctx::scope("app")
            .run(async move {
                let finished = seen;
                ctx::spawn(async move {
                    tokio::task::yield_now().await;
                    // Spawned while the scope is already waiting for its tasks.
                    let finished2 = finished.clone();
                    ctx::spawn(async move {
                        tokio::task::yield_now().await;
                        finished2.fetch_add(1, Ordering::SeqCst);
                    });
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            })
            .await;
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn bus_is_closed_after_the_body_returns() {
    both(|| async {
        let (send_result, sub_reason, spawn_ok) = ctx::scope("app")
            .run(async {
                let mut watch = ctx::subscribe::<Job>();
                ctx::spawn(async move {
                    // Ends when the body is done (exit step a); the bus is closed by then.
                    while watch.next().await.is_some() {}
                    let send = ctx::try_send(Job(1)).map_err(|e| e.kind());
                    let plain = ctx::send(Job(2));
                    assert_eq!(
                        plain.delivered(),
                        0,
                        "plain send on a closed bus delivers nothing"
                    );
                    let mut late = ctx::subscribe::<Job>();
                    assert!(
                        late.next().await.is_none(),
                        "an ended subscription, not a hang"
                    );
                    // Tasks may still spawn tasks while the scope waits for them.
                    let spawn_ok = ctx::try_spawn(async {}).is_ok();
                    (send, late.end_reason(), spawn_ok)
                })
            })
            .await
            .await
            .unwrap();
        assert_eq!(send_result, Err(SendErrorKind::Closed));
        assert!(matches!(
            sub_reason,
            Some(EndReason::BusClosed | EndReason::ScopeFinished)
        ));
        assert!(spawn_ok);
    });
}

#[test]
fn nested_scope_subscriptions_end_with_the_nested_scope() {
    both(|| async {
        ctx::scope("parent")
            .run(async {
                let child_sub = ctx::scope("child")
                    .run(async {
                        let sub = ctx::subscribe::<Job>();
                        ctx::send(Job(1));
                        sub
                    })
                    .await;
                let mut child_sub = child_sub;
                // The parent's bus is still open...
                assert_eq!(
                    ctx::try_send(Job(2)).map_err(|e| e.kind()),
                    Ok(scopebus::Sent::Delivered(0))
                );
                // ...but the child's subscription yields what it held, then ends.
                assert_eq!(child_sub.next().await.unwrap().0, 1);
                assert!(child_sub.next().await.is_none());
                assert_eq!(child_sub.end_reason(), Some(EndReason::ScopeFinished));
            })
            .await;
    });
}

#[test]
fn nested_scope_waits_only_for_its_own_tasks() {
    both(|| async {
        ctx::scope("parent")
            .run(async {
                let (release, released) = oneshot::channel::<()>();
                let parent_task = ctx::spawn(async move {
                    released.await.unwrap();
                });
                // Would never return if it waited for `parent_task`.
                ctx::scope("child")
                    .run(async {
                        ctx::spawn(async {});
                    })
                    .await;
                assert!(!parent_task.is_finished());
                release.send(()).unwrap();
                parent_task.await.unwrap();
            })
            .await;
    });
}

#[test]
fn a_panicking_task_fails_the_scope_and_cancels_everything() {
    both(|| async {
        let counter = DropCounter::default();
        let c = counter.clone();
        let result = AssertUnwindSafe(ctx::scope("failing").run(async move {
            let guard = c.guard();
            let sibling_guard = c.guard();
            let sibling = ctx::spawn(async move {
                let _guard = sibling_guard;
                std::future::pending::<()>().await;
            });
            let nested_guard = c.guard();
            ctx::spawn(ctx::scope("nested").run(async move {
                ctx::spawn(async move {
                    let _guard = nested_guard;
                    std::future::pending::<()>().await;
                });
                std::future::pending::<()>().await;
            }));
            let failing = ctx::spawn(async {
                tokio::task::yield_now().await;
                panic!("boom in a task");
            });
            assert_eq!(
                failing.await,
                Err(TaskError::Panicked("boom in a task".into()))
            );
            // The body is cancelled at its next await.
            let _keep = guard;
            std::future::pending::<()>().await;
            drop(sibling);
        }))
        .catch_unwind()
        .await;
        let payload = result.expect_err("the panic comes out of run");
        assert_eq!(panic_text(&*payload), "boom in a task");
        assert_eq!(
            counter.live(),
            0,
            "body, sibling and nested task were all dropped"
        );
    });
}

#[test]
fn a_task_that_fails_while_the_body_waits_on_something_else_still_ends_the_body() {
    both(|| async {
        let run = AssertUnwindSafe(ctx::scope("failing").run(async {
            let (parked, wait) = tokio::sync::oneshot::channel::<()>();
            ctx::spawn(async move {
                wait.await.unwrap();
                tokio::task::yield_now().await;
                panic!("late failure");
            });
            // The body parks on something no failure will ever wake.
            parked.send(()).unwrap();
            std::future::pending::<()>().await;
        }))
        .catch_unwind();
        // A hang guard, checked first: were the scope not woken by the failure, any later
        // wake-up (such as a timer's) would let it notice and hide the hang.
        let result = tokio::select! {
            biased;
            () = tokio::time::sleep(std::time::Duration::from_secs(20)) => {
                panic!("the body was not woken by the task's failure")
            }
            result = run => result,
        };
        let payload = result.expect_err("the panic comes out of run");
        assert_eq!(panic_text(&*payload), "late failure");
    });
}

#[test]
fn a_panicking_body_cancels_tasks_and_is_resumed() {
    both(|| async {
        let counter = DropCounter::default();
        let c = counter.clone();
        let result = AssertUnwindSafe(ctx::scope("failing").run(async move {
            let guard = c.guard();
            ctx::spawn(async move {
                let _guard = guard;
                ctx::cancelled().await;
                std::future::pending::<()>().await; // aborted anyway
            });
            tokio::task::yield_now().await;
            panic!("boom in the body");
        }))
        .catch_unwind()
        .await;
        assert_eq!(panic_text(&*result.unwrap_err()), "boom in the body");
        assert_eq!(counter.live(), 0);
    });
}

#[test]
fn subscriptions_of_a_failed_scope_end_with_scope_failed() {
    both(|| async {
        let (tx, rx) = oneshot::channel();
        let result = AssertUnwindSafe(ctx::scope("failing").run(async move {
            let sub = ctx::subscribe::<Job>();
            tx.send(sub).unwrap();
            panic!("fail");
        }))
        .catch_unwind()
        .await;
        assert!(result.is_err());
        let mut sub = rx.await.unwrap();
        assert!(sub.next().await.is_none());
        assert_eq!(sub.end_reason(), Some(EndReason::ScopeFailed));
    });
}

#[test]
fn abort_is_not_a_failure() {
    both(|| async {
        let out = ctx::scope("abort")
            .run(async {
                let counter = DropCounter::default();
                let guard = counter.guard();
                let task = ctx::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                });
                task.abort();
                assert_eq!(task.await, Err(TaskError::Cancelled));
                assert_eq!(counter.live(), 0);
                "body completed"
            })
            .await;
        assert_eq!(out, "body completed");
    });
}

#[test]
fn dropping_the_handle_does_not_cancel_the_task() {
    both(|| async {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        ctx::scope("detached")
            .run(async move {
                drop(ctx::spawn(async move {
                    tokio::task::yield_now().await;
                    d.fetch_add(1, Ordering::SeqCst);
                }));
            })
            .await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    });
}

/// Sends `()` when dropped.
struct NotifyOnDrop(mpsc::UnboundedSender<()>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A task that says it started, then counts forever until its future is dropped.
async fn ticker(ticks: Arc<AtomicU64>, guard: NotifyOnDrop, started: mpsc::UnboundedSender<()>) {
    let _guard = guard;
    started.send(()).unwrap();
    loop {
        ticks.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
}

#[test]
fn dropping_run_aborts_every_task_of_the_scope_and_nested_scopes() {
    both(|| async {
        let ticks = Arc::new(AtomicU64::new(0));
        let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel::<()>();
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
        let t = ticks.clone();
        let scope = ctx::scope("doomed").run(async move {
            for _ in 0..3 {
                let guard = NotifyOnDrop(dropped_tx.clone());
                ctx::spawn(ticker(t.clone(), guard, started_tx.clone()));
            }
            let guard = NotifyOnDrop(dropped_tx.clone());
            ctx::spawn(ctx::scope("nested").run(async move {
                ctx::spawn(ticker(t, guard, started_tx));
                std::future::pending::<()>().await
            }));
            std::future::pending::<()>().await
        });
        let scope = tokio::spawn(scope);
        for _ in 0..4 {
            started_rx.recv().await.unwrap();
        }
        scope.abort(); // drops the run future
        for _ in 0..4 {
            dropped_rx
                .recv()
                .await
                .expect("every task's future is dropped");
        }
        let frozen = ticks.load(Ordering::SeqCst);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            frozen,
            "the counter stopped moving"
        );
    });
}

#[test]
fn thousands_of_short_scopes_leave_nothing_running() {
    both(|| async {
        let counter = DropCounter::default();
        for i in 0..3000u32 {
            let c = counter.clone();
            ctx::scope("short")
                .run(async move {
                    let mut sub = ctx::subscribe::<Job>();
                    let guard = c.guard();
                    ctx::spawn(async move {
                        let _guard = guard;
                        while sub.next().await.is_some() {}
                    });
                    ctx::send(Job(i));
                })
                .await;
            assert_eq!(counter.live(), 0, "scope {i} left a task running");
        }
    });
    // On a current-thread runtime tokio's own count is exact.
    current(async {
        for _ in 0..1000 {
            ctx::scope("short")
                .run(async {
                    ctx::spawn(async {});
                    ctx::spawn(ctx::scope("nested").run(async {
                        ctx::spawn(async {});
                    }));
                })
                .await;
        }
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(alive, 0);
    });
}

#[test]
fn spawning_from_a_cancelled_scope_is_refused() {
    both(|| async {
        // `Drop` code of a task being aborted still runs in its scope's context; by then the
        // scope is finished and must not accept new tasks that nobody would wait for.
        struct SpawnOnDrop(Option<oneshot::Sender<Result<(), SpawnError>>>);
        impl Drop for SpawnOnDrop {
            fn drop(&mut self) {
                let result = ctx::try_spawn(async {}).map(drop);
                let _ = self.0.take().unwrap().send(result);
            }
        }
        let (tx, rx) = oneshot::channel();
        let (started_tx, started_rx) = oneshot::channel();
        let scope = tokio::spawn(ctx::scope("cancelled").run(async move {
            ctx::spawn(async move {
                let _guard = SpawnOnDrop(Some(tx));
                started_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
            std::future::pending::<()>().await
        }));
        started_rx.await.unwrap();
        scope.abort();
        assert_eq!(rx.await.unwrap(), Err(SpawnError::ScopeFinished));
    });
}

#[test]
fn run_future_is_send_and_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    both(|| async {
        let fut = ctx::scope("spawned").run(async {
            let mut sub = ctx::subscribe::<Job>();
            ctx::send(Job(4));
            sub.next().await.unwrap().0
        });
        assert_send(&fut);
        assert_eq!(tokio::spawn(fut).await.unwrap(), 4);
    });
}

#[test]
fn no_task_of_a_nested_scope_outlives_an_enclosing_scope_that_fails() {
    // Tasks two scopes deep, inside a task that the failing scope aborts. Their `Drop` is slow
    // (it runs on another worker on the multi-thread runtime): `run` must still wait for it.
    struct SlowDrop(#[allow(dead_code)] common::Guard);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    both(|| async {
        let counter = DropCounter::default();
        let c = counter.clone();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
        let result = AssertUnwindSafe(ctx::scope("outer").run(async move {
            let guard = SlowDrop(c.guard());
            let ready = ready_tx.clone();
            ctx::spawn(ctx::scope("middle").run(async move {
                ctx::spawn(ctx::scope("inner").run(async move {
                    ctx::spawn(async move {
                        let _guard = guard;
                        ready.send(()).unwrap();
                        std::future::pending::<()>().await
                    });
                    std::future::pending::<()>().await
                }));
                std::future::pending::<()>().await
            }));
            ready_rx.recv().await.unwrap();
            panic!("outer fails");
        }))
        .catch_unwind()
        .await;
        assert!(result.is_err());
        assert_eq!(counter.live(), 0, "a nested task outlived the outer scope");
    });
}
