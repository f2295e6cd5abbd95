//! Cooperative cancellation and graceful shutdown with a deadline (SPEC §3.4).
//!
//! Deadlines are checked on a paused clock (`start_paused`), so the tests are deterministic and
//! take no real time.

// Scopes here often return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use std::time::Duration;

use common::{DropCounter, both};
use scopebus::{TaskError, ctx};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn cooperative_tasks_stop_on_the_signal_before_the_deadline() {
    let start = Instant::now();
    let stopped = ctx::scope("server")
        .run(async {
            let worker = ctx::spawn(async {
                let mut rounds = 0u32;
                loop {
                    tokio::select! {
                        _ = ctx::cancelled() => return rounds,
                        _ = tokio::time::sleep(Duration::from_millis(10)) => rounds += 1,
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(55)).await;
            ctx::shutdown(Duration::from_secs(30));
            assert!(ctx::is_cancelled());
            worker
        })
        .await;
    assert_eq!(
        stopped.await,
        Ok(5),
        "the worker returned normally, not cancelled"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no need to wait for the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_that_ignore_the_signal_are_aborted_at_the_deadline() {
    let counter = DropCounter::default();
    let start = Instant::now();
    let c = counter.clone();
    let stubborn = ctx::scope("server")
        .run(async move {
            let guard = c.guard();
            let stubborn = ctx::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            ctx::shutdown(Duration::from_secs(5));
            stubborn
        })
        .await;
    assert_eq!(stubborn.await, Err(TaskError::Cancelled));
    assert_eq!(counter.live(), 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "aborted at the deadline, waited {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn nested_scopes_see_the_signal_and_obey_the_deadline() {
    let start = Instant::now();
    let (saw_signal, stubborn) = ctx::scope("parent")
        .run(async {
            let handle = ctx::current();
            ctx::scope("child")
                .isolated() // isolation is about events: cancellation still flows down
                .run(async move {
                    let aware = ctx::spawn(async {
                        ctx::cancelled().await;
                        "signalled"
                    });
                    let stubborn = ctx::spawn(std::future::pending::<()>());
                    handle.shutdown(Duration::from_secs(2));
                    (aware.await, stubborn)
                })
                .await
        })
        .await;
    assert_eq!(saw_signal, Ok("signalled"));
    assert_eq!(stubborn.await, Err(TaskError::Cancelled));
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn shutdown_on_a_signal_future() {
    let (trigger, signal) = oneshot::channel::<()>();
    let start = Instant::now();
    let result = ctx::scope("app")
        .shutdown_on(signal, Duration::from_secs(3))
        .run(async {
            let worker = ctx::spawn(async {
                ctx::cancelled().await;
                "clean stop"
            });
            let stubborn = ctx::spawn(std::future::pending::<()>());
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!ctx::is_cancelled());
            trigger.send(()).unwrap();
            ctx::cancelled().await; // the body watches the signal too
            (worker, stubborn)
        })
        .await;
    assert_eq!(result.0.await, Ok("clean stop"));
    assert_eq!(result.1.await, Err(TaskError::Cancelled));
    assert!(start.elapsed() >= Duration::from_secs(4));
}

#[test]
fn zero_grace_aborts_at_once_and_failure_raises_the_signal() {
    both(|| async {
        let stubborn = ctx::scope("now")
            .run(async {
                let stubborn = ctx::spawn(std::future::pending::<()>());
                ctx::shutdown(Duration::ZERO);
                stubborn
            })
            .await;
        assert_eq!(stubborn.await, Err(TaskError::Cancelled));

        // A failing scope raises the signal before aborting.
        let (tx, rx) = oneshot::channel();
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            ctx::scope("failing").run(async move {
                ctx::spawn(async move {
                    ctx::cancelled().await;
                    let _ = tx.send("signal seen");
                    std::future::pending::<()>().await;
                });
                tokio::task::yield_now().await;
                panic!("fail");
            }),
        ))
        .await;
        assert!(result.is_err());
        // The task may have been aborted before it ran; if it ran, it saw the signal.
        if let Ok(message) = rx.await {
            assert_eq!(message, "signal seen");
        }
    });
}

#[test]
fn dropping_run_raises_the_signal_for_handles() {
    both(|| async {
        let (tx, rx) = oneshot::channel();
        let scope = tokio::spawn(ctx::scope("dropped").run(async move {
            tx.send(ctx::current()).unwrap();
            std::future::pending::<()>().await
        }));
        let handle = rx.await.unwrap();
        assert!(!handle.is_cancelled());
        let cancelled = handle.cancelled();
        scope.abort();
        cancelled.await;
        assert!(handle.is_cancelled());
    });
}

/// A nested scope makes its signal only when first asked (`scope.rs`): whether the parent was
/// cancelled before the nested scope opened, or while it was open but had not looked yet, the
/// nested scope and the scopes inside it see the signal.
#[tokio::test(start_paused = true)]
async fn nested_scopes_see_a_signal_raised_before_they_first_look() {
    ctx::scope("app")
        .run(async {
            let parent = ctx::current();
            ctx::scope("opened before")
                .run(async {
                    // Neither this scope nor the one below has looked at its signal yet.
                    parent.shutdown(Duration::from_secs(60));
                    ctx::scope("grandchild")
                        .run(async {
                            assert!(ctx::is_cancelled());
                            ctx::cancelled().await;
                        })
                        .await;
                    assert!(ctx::is_cancelled());
                })
                .await;
            ctx::scope("opened after")
                .run(async {
                    assert!(ctx::is_cancelled());
                    ctx::cancelled().await;
                })
                .await;
        })
        .await;
}

/// A signal raised on a nested scope reaches its tasks and its own nested scopes, not its
/// parent.
#[tokio::test(start_paused = true)]
async fn a_nested_signal_stays_below_its_scope() {
    ctx::scope("app")
        .run(async {
            ctx::scope("child")
                .run(async {
                    let worker = ctx::spawn(async { ctx::cancelled().await });
                    ctx::current().shutdown(Duration::from_secs(60));
                    ctx::scope("grandchild")
                        .run(async { assert!(ctx::is_cancelled()) })
                        .await;
                    worker
                })
                .await
                .await
                .unwrap();
            assert!(!ctx::is_cancelled());
        })
        .await;
}

/// A nested scope joins the abort tree when it first needs to (`scope.rs`): a task spawned in
/// it after its parent's tasks were aborted is aborted too, not left running.
#[tokio::test(start_paused = true)]
async fn a_task_spawned_below_an_aborted_scope_is_aborted() {
    let scope = ctx::scope("app").run(async {
        let parent = ctx::current();
        let late = ctx::scope("child")
            .run(async move {
                parent.shutdown(Duration::ZERO); // aborts the parent's tasks at once
                ctx::scope("grandchild")
                    .run(async { ctx::spawn(std::future::pending::<()>()) })
                    .await
            })
            .await;
        late.await
    });
    // Were the task left running, the grandchild scope would wait for it forever.
    let outcome = tokio::time::timeout(Duration::from_secs(3600), scope).await;
    assert_eq!(
        outcome.expect("the scopes finished"),
        Err(TaskError::Cancelled)
    );
}

/// A task whose future panics while being dropped (here, when aborted) is still released from
/// its scope's count: the scope finishes instead of waiting for a task that is gone. The
/// handle reports the panic (`tokio` catches it while dropping the aborted future).
#[tokio::test(start_paused = true)]
async fn a_task_whose_drop_panics_does_not_hold_its_scope() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropped");
        }
    }
    let scope = ctx::scope("app").run(async {
        let task = ctx::spawn(async {
            let _guard = PanicsOnDrop;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await; // let it start and hold the guard
        ctx::current().shutdown(Duration::ZERO);
        task
    });
    let task = tokio::time::timeout(Duration::from_secs(3600), scope)
        .await
        .expect("the scope finished");
    assert!(matches!(task.await, Err(TaskError::Panicked(message)) if message == "dropped"));
}
