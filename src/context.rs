//! The task-local context stack: which scope is current.
//!
//! The current scope ([`Frame`]) is a `tokio` task-local. `Scope::run` sets it for the body,
//! `ctx::spawn` sets it for the spawned task (a task-local does not flow into `tokio::spawn` by
//! itself), and a nested `run` shadows it for its own body — that shadowing is the stack.
//!
//! Invariants:
//! - Reading the context never clones the frame on the hot path: `with` lends `&Arc<Frame>`.
//! - `TaskLocalFuture` keeps the context set while the wrapped future is dropped, so `Drop` code
//!   of a body or task still sees its scope.

use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

use crate::scope::Frame;

tokio::task_local! {
    static CONTEXT: Arc<Frame>;
}

/// Runs `f` with the current frame; `None` outside of any scope.
pub(crate) fn with<R>(f: impl FnOnce(&Arc<Frame>) -> R) -> Option<R> {
    CONTEXT.try_with(f).ok()
}

/// `true` inside a scope.
#[inline]
pub(crate) fn is_set() -> bool {
    CONTEXT.try_with(|_| ()).is_ok()
}

/// The current frame, cloned.
pub(crate) fn current() -> Option<Arc<Frame>> {
    with(Arc::clone)
}

/// `future` with `frame` as its current scope.
pub(crate) fn scoped<F: Future>(frame: Arc<Frame>, future: F) -> TaskLocalFuture<Arc<Frame>, F> {
    CONTEXT.scope(frame, future)
}
