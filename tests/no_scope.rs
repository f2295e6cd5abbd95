//! Outside of any scope: the `try_` forms return errors, the plain forms panic with a message
//! that says what to do.

mod common;

use std::panic::catch_unwind;

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

#[test]
fn plain_forms_panic_with_guidance() {
    let expected = |f: &str| {
        format!(
            "`ctx::{f}` called outside of a scope; wrap the task in `ctx::scope(..).run(..)` or start it with `ctx::spawn`"
        )
    };
    assert_eq!(
        panic_message_of(|| {
            let _ = ctx::send(NotDebug);
        }),
        expected("send")
    );
    assert_eq!(
        panic_message_of(|| drop(ctx::subscribe::<NotDebug>())),
        expected("subscribe")
    );
    assert_eq!(
        panic_message_of(|| drop(ctx::spawn(async {}))),
        expected("spawn")
    );
    assert_eq!(
        panic_message_of(|| drop(ctx::cancelled())),
        expected("cancelled")
    );
    assert_eq!(
        panic_message_of(|| {
            let _ = ctx::is_cancelled();
        }),
        expected("is_cancelled")
    );
    assert_eq!(
        panic_message_of(|| ctx::shutdown(std::time::Duration::ZERO)),
        expected("shutdown")
    );
    assert_eq!(
        panic_message_of(|| drop(ctx::current())),
        expected("current")
    );
}

#[test]
fn panic_location_is_the_callers() {
    // `#[track_caller]`: the panic points at this file, not into the library.
    let location = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = location.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        *seen.lock().unwrap() = info.location().map(|l| l.file().to_owned());
    }));
    let _ = catch_unwind(|| ctx::send(NotDebug));
    std::panic::set_hook(previous);
    let file = location.lock().unwrap().clone().unwrap();
    assert!(file.ends_with("no_scope.rs"), "panic located in {file}");
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    // A scope polled by a non-tokio executor: no runtime to spawn on.
    futures::executor::block_on(ctx::scope("no-runtime").run(async {
        assert_eq!(ctx::try_spawn(async {}).unwrap_err(), SpawnError::NoRuntime);
    }));
}
