//! System events (SPEC §5): the library's own lifecycle, drop and dead-letter events, as
//! ordinary typed events, on the documented buses.

// Scopes here sometimes return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use std::panic::AssertUnwindSafe;

use common::both;
use futures::{FutureExt, StreamExt};
use scopebus::{
    DeadLetter, EventDropped, Overflow, ScopeOutcome, ScopeStarted, ScopeStopped, TaskCancelled,
    TaskFailed, TaskFinished, TaskSpawned, ctx,
};

#[test]
fn nested_and_isolated_scopes_announce_start_and_stop_on_the_parent_bus() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut started = ctx::subscribe::<ScopeStarted>();
                let mut stopped = ctx::subscribe::<ScopeStopped>();
                let app = ctx::current().info().id();
                ctx::scope("nested").run(async {}).await;
                ctx::scope("component")
                    .isolated()
                    .run(async {
                        // Inside, on the isolated bus: the grandchild's lifecycle stays here.
                        let mut inner = ctx::subscribe::<ScopeStarted>();
                        ctx::scope("grandchild").run(async {}).await;
                        assert_eq!(inner.drain().len(), 1);
                    })
                    .await;
                let failing = AssertUnwindSafe(ctx::scope("failing").run(async {
                    panic!("bad");
                }))
                .catch_unwind()
                .await;
                assert!(failing.is_err());

                let starts: Vec<(String, bool)> = started
                    .drain()
                    .iter()
                    .map(|e| {
                        assert_eq!(e.parent, app);
                        (e.scope.name().to_owned(), e.isolated)
                    })
                    .collect();
                assert_eq!(
                    starts,
                    [
                        ("nested".to_owned(), false),
                        ("component".to_owned(), true),
                        ("failing".to_owned(), false)
                    ],
                    "the grandchild's start stayed on the isolated bus"
                );
                let stops: Vec<(String, ScopeOutcome)> = stopped
                    .drain()
                    .iter()
                    .map(|e| (e.scope.name().to_owned(), e.outcome.clone()))
                    .collect();
                assert_eq!(
                    stops,
                    [
                        ("nested".to_owned(), ScopeOutcome::Finished),
                        ("component".to_owned(), ScopeOutcome::Finished),
                        ("failing".to_owned(), ScopeOutcome::Failed("bad".to_owned()))
                    ]
                );
            })
            .await;
    });
}

#[test]
fn a_dropped_scope_announces_its_cancellation() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut stopped = ctx::subscribe::<ScopeStopped>();
                let nested = ctx::scope("doomed").run(std::future::pending::<()>());
                let _ = tokio::time::timeout(std::time::Duration::from_millis(1), nested).await;
                let event = stopped.try_next().unwrap();
                assert_eq!(event.scope.name(), "doomed");
                assert_eq!(event.outcome, ScopeOutcome::Cancelled);
            })
            .await;
    });
}

#[test]
fn task_events_one_each_with_the_panic_message() {
    both(|| async {
        let result = AssertUnwindSafe(ctx::scope("app").run(async {
            let mut spawned = ctx::subscribe::<TaskSpawned>();
            let mut finished = ctx::subscribe::<TaskFinished>();
            let mut failed = ctx::subscribe::<TaskFailed>();
            let mut cancelled = ctx::subscribe::<TaskCancelled>();

            let ok = ctx::spawn(async { 1 });
            let ok_id = spawned.try_next().unwrap().task;
            ok.await.unwrap();
            let aborted = ctx::spawn(std::future::pending::<()>());
            let aborted_id = spawned.try_next().unwrap().task;
            aborted.abort();
            let _ = aborted.await;
            assert_ne!(ok_id, aborted_id);
            // Outcome events are published as each task's future is dropped.
            assert_eq!(finished.next().await.unwrap().task, ok_id);
            assert_eq!(cancelled.next().await.unwrap().task, aborted_id);

            let boom = ctx::spawn(async { panic!("boom {}", 7) });
            let boom_id = spawned.try_next().unwrap().task;
            let _ = boom.await;
            let event = failed.next().await.unwrap();
            assert_eq!((event.task, event.message.as_str()), (boom_id, "boom 7"));
            assert!(failed.try_next().is_err(), "exactly one");
            assert_eq!(event.scope.name(), "app");
            std::future::pending::<()>().await
        }))
        .catch_unwind()
        .await;
        assert!(result.is_err(), "the panic fails the scope");
    });
}

#[test]
fn isolation_holds_for_task_events() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut outside = ctx::subscribe::<TaskSpawned>();
                ctx::scope("component")
                    .isolated()
                    .run(async {
                        ctx::spawn(async {});
                    })
                    .await;
                assert!(outside.drain().is_empty());
            })
            .await;
    });
}

#[test]
fn critical_drops_are_published_lossy_ones_are_not() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut drops = ctx::subscribe::<EventDropped>();
                let _critical = ctx::subscription::<u32>()
                    .name("critical")
                    .bounded(1, Overflow::DropNewest)
                    .subscribe();
                let _lossy = ctx::subscription::<u32>()
                    .bounded(1, Overflow::DropNewest)
                    .lossy()
                    .subscribe();
                // A full subscriber of the drop reports does not report itself (no recursion).
                let _full_watcher = ctx::subscription::<EventDropped>()
                    .bounded(1, Overflow::DropNewest)
                    .subscribe();
                for i in 0..4u32 {
                    ctx::send(i);
                }
                let reports = drops.drain();
                assert_eq!(reports.len(), 3, "one per critical drop");
                assert!(
                    reports
                        .iter()
                        .all(|e| e.report.subscriber.as_deref() == Some("critical"))
                );
            })
            .await;
    });
}

#[test]
fn dead_letters_only_when_enabled() {
    struct Unheard;
    both(|| async {
        ctx::scope("quiet")
            .run(async {
                let mut letters = ctx::subscribe::<DeadLetter>();
                ctx::send(Unheard);
                assert!(letters.drain().is_empty(), "off by default");
            })
            .await;
        ctx::scope("strict")
            .dead_letters()
            .run(async {
                let mut letters = ctx::subscribe::<DeadLetter>();
                ctx::send(Unheard);
                let _heard = ctx::subscribe::<u8>();
                ctx::send(1u8);
                let got = letters.drain();
                assert_eq!(got.len(), 1, "only the unheard event");
                assert!(got[0].event_type.ends_with("Unheard"));
                assert_eq!(got[0].origin.name(), "strict");
            })
            .await;
    });
}
