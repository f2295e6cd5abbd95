//! Outside of any scope: the `try_` forms return errors, the plain forms panic with a message
//! that says what to do.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use futures::FutureExt;

use scopebus::{SendErrorKind, SpawnError, SubscribeError, ctx};

struct NotDebug;

fn panic_message_of(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = catch_unwind(f).expect_err("expected a panic");
    common::panic_text(&*payload)
}

#[test]
fn try_forms_return_errors() {
    let err = ctx::try_send(NotDebug).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::NoScope);
    assert!(err.to_string().contains("ctx::scope(..).run(..)"), "{err}");
    // Debug works without `E: Debug`, and the event comes back.
    assert!(format!("{err:?}").contains("NoScope"));
    let _back: NotDebug = err.into_event();

    assert_eq!(
        ctx::try_subscribe::<NotDebug>().unwrap_err(),
        SubscribeError::NoScope
    );
    assert_eq!(ctx::try_spawn(async {}).unwrap_err(), SpawnError::NoScope);
    assert!(ctx::try_current().is_none());
}

#[test]
fn errors_are_std_errors() {
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<scopebus::SendError<NotDebug>>();
    assert_error::<SubscribeError>();
    assert_error::<SpawnError>();
    assert_error::<scopebus::TaskError>();
}

/// Every plain form panics with a message naming the call, at the caller's location
/// (`#[track_caller]` all the way). One test owns the panic hook, so nothing else in this file
/// may panic.
#[test]
fn plain_forms_panic_with_guidance_at_the_callers_location() {
    use std::sync::{Arc, Mutex};
    let location = Arc::new(Mutex::new(None::<String>));
    let seen = location.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        *seen.lock().unwrap() = info.location().map(|l| l.file().to_owned());
    }));
    let expected = |f: &str| {
        format!(
            "`ctx::{f}` called outside of a scope; wrap the task in `ctx::scope(..).run(..)` or start it with `ctx::spawn`"
        )
    };
    type Call = Box<dyn FnOnce() + std::panic::UnwindSafe>;
    let calls: Vec<(&str, Call)> = vec![
        (
            "send",
            Box::new(|| {
                let _ = ctx::send(NotDebug);
            }),
        ),
        ("subscribe", Box::new(|| drop(ctx::subscribe::<NotDebug>()))),
        (
            "subscription(..).subscribe",
            Box::new(|| drop(ctx::subscription::<NotDebug>().subscribe())),
        ),
        (
            "subscribe_many/tap(..).subscribe",
            Box::new(|| drop(ctx::tap().subscribe())),
        ),
        ("spawn", Box::new(|| drop(ctx::spawn(async {})))),
        ("cancelled", Box::new(|| drop(ctx::cancelled()))),
        (
            "is_cancelled",
            Box::new(|| {
                let _ = ctx::is_cancelled();
            }),
        ),
        (
            "shutdown",
            Box::new(|| ctx::shutdown(std::time::Duration::ZERO)),
        ),
        ("retain", Box::new(|| ctx::retain::<NotDebug>(1))),
        ("stats", Box::new(|| drop(ctx::stats()))),
        ("state", Box::new(|| drop(ctx::state::<NotDebug>()))),
        ("current", Box::new(|| drop(ctx::current()))),
    ];
    let mut failures = Vec::new();
    for (name, call) in calls {
        *location.lock().unwrap() = None;
        let message = panic_message_of(call);
        if message != expected(name) {
            failures.push(format!("{name}: message {message:?}"));
        }
        let file = location.lock().unwrap().clone().unwrap_or_default();
        if !file.ends_with("no_scope.rs") {
            failures.push(format!("{name}: panic located in {file}"));
        }
    }
    std::panic::set_hook(previous);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    // A scope polled by a non-tokio executor: no runtime to spawn on.
    futures::executor::block_on(ctx::scope("no-runtime").run(async {
        assert_eq!(ctx::try_spawn(async {}).unwrap_err(), SpawnError::NoRuntime);
    }));
}

/// A future that completes at once and panics when dropped: its scope drops it as soon as it
/// completes, inside the scope's context, so the panic unwinds out of that poll.
struct PanicsWhenDropped;

impl std::future::Future for PanicsWhenDropped {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }
}

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("dropped");
    }
}

/// The current scope is set around each poll of a scope's future and unset after, also when the
/// poll unwinds: afterwards the thread is outside any scope again. (One thread, so the tasks
/// run where the checks run.)
#[test]
fn after_a_poll_that_unwinds_the_thread_is_outside_any_scope_again() {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            let failed = AssertUnwindSafe(ctx::scope("failing").run(async {
                let _ = ctx::spawn(PanicsWhenDropped).await;
                panic!("body");
            }))
            .catch_unwind()
            .await;
            assert!(failed.is_err());
            assert!(
                ctx::try_current().is_none(),
                "a scope's context was left set"
            );
            let plain = tokio::spawn(async { ctx::try_current().is_none() });
            assert!(plain.await.unwrap(), "a plain task sees a leftover context");
        });
}
