//! Scoped state (SPEC §6): values by exact type, nearest wins, parents untouched, isolated
//! scopes and tasks inherit, a clear error when absent.

mod common;

use std::sync::Arc;

use common::{both, panic_text};
use futures::FutureExt;
use scopebus::{StateError, ctx};

#[derive(Debug, PartialEq)]
struct Config {
    name: &'static str,
}

#[derive(Debug, PartialEq)]
struct Limit(u32);

#[test]
fn nearest_value_wins_and_the_parent_is_untouched() {
    both(|| async {
        ctx::scope("app")
            .with_state(Config { name: "app" })
            .with_state(Limit(10))
            .run(async {
                assert_eq!(ctx::state::<Config>().name, "app");
                ctx::scope("request")
                    .with_state(Config { name: "request" })
                    .run(async {
                        assert_eq!(ctx::state::<Config>().name, "request", "overridden");
                        assert_eq!(*ctx::state::<Limit>(), Limit(10), "inherited");
                        ctx::scope("deeper")
                            .run(async {
                                assert_eq!(ctx::state::<Config>().name, "request");
                            })
                            .await;
                    })
                    .await;
                assert_eq!(ctx::state::<Config>().name, "app", "parent untouched");
            })
            .await;
    });
}

#[test]
fn isolated_scopes_and_tasks_inherit_state() {
    both(|| async {
        ctx::scope("app")
            .with_state(Limit(3))
            .run(async {
                let from_task = ctx::spawn(async { ctx::state::<Limit>().0 });
                assert_eq!(from_task.await.unwrap(), 3);
                let isolated = ctx::scope("component")
                    .isolated()
                    .run(async { ctx::spawn(async { ctx::state::<Limit>().0 }).await })
                    .await;
                assert_eq!(isolated.unwrap(), 3, "isolation is about events only");
            })
            .await;
    });
}

#[test]
fn state_is_shared_not_copied_and_keyed_by_exact_type() {
    both(|| async {
        ctx::scope("app")
            .with_state(Limit(1))
            .with_state(Limit(2)) // the last of one type wins
            .with_state(7u32)
            .run(async {
                assert_eq!(*ctx::state::<Limit>(), Limit(2));
                assert_eq!(*ctx::state::<u32>(), 7);
                assert!(ctx::try_state::<u64>().is_err(), "u32 is not u64");
                let a = ctx::state::<Limit>();
                let b = ctx::state::<Limit>();
                assert!(Arc::ptr_eq(&a, &b), "one value, shared");
            })
            .await;
    });
}

#[test]
fn a_missing_value_is_a_clear_error() {
    assert_eq!(ctx::try_state::<Limit>().unwrap_err(), StateError::NoScope);
    both(|| async {
        ctx::scope("app")
            .run(async {
                let err = ctx::try_state::<Limit>().unwrap_err();
                assert!(
                    matches!(err, StateError::Missing { type_name } if type_name.ends_with("Limit"))
                );
                assert!(err.to_string().contains("with_state"), "{err}");
                let panic = std::panic::AssertUnwindSafe(async { ctx::state::<Limit>() })
                    .catch_unwind()
                    .await
                    .unwrap_err();
                let message = panic_text(&*panic);
                assert!(
                    message.contains("Limit") && message.contains("with_state"),
                    "{message}"
                );
            })
            .await;
    });
}
