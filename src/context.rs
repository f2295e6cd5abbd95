//! The context stack: which scope is current.
//!
//! The current scope ([`Frame`]) lives in a thread-local that [`Scoped`] sets around each poll
//! of the future it wraps: `Scope::run` wraps its body, `ctx::spawn` its task (a thread-local
//! does not flow into `tokio::spawn` by itself), and a nested `run` shadows its parent's for
//! its own body — that shadowing is the stack. (This is what `tokio::task_local!` does; our
//! own is read directly rather than through `std`'s key accessor behind tokio's, which made a
//! third of the cost of a send nobody hears.)
//!
//! Invariants:
//! - Reading the context never clones the frame on the hot path: `with` lends `&Arc<Frame>`.
//! - [`Scoped`] swaps its frame into the thread-local before polling and swaps it back after,
//!   also when the poll panics (a guard), so the thread-local always holds the frame of the
//!   innermost future being polled on this thread, or `None`.
//! - [`Scoped`] sets its frame again while the wrapped future is dropped, so `Drop` code of a
//!   body or task still sees its scope (best effort: not if the context is borrowed at that
//!   moment, or the thread is exiting).
//! - The context is borrowed (shared) only for the duration of `with`'s closure. Polling a
//!   `Scoped` from inside that closure cannot swap it, and panics saying so, as
//!   `tokio::task_local!` does.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use crate::scope::Frame;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Frame>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current frame; `None` outside of any scope.
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&Arc<Frame>) -> R) -> Option<R> {
    CURRENT
        .try_with(|current| current.borrow().as_ref().map(f))
        .ok()
        .flatten()
}

/// `true` inside a scope.
#[inline]
pub(crate) fn is_set() -> bool {
    CURRENT
        .try_with(|current| current.borrow().is_some())
        .unwrap_or(false)
}

/// The current frame, cloned.
pub(crate) fn current() -> Option<Arc<Frame>> {
    with(Arc::clone)
}

/// `future` with `frame` as its current scope.
pub(crate) fn scoped<F: Future>(frame: Arc<Frame>, future: F) -> Scoped<F> {
    Scoped {
        frame: Some(frame),
        future: Some(future),
    }
}

/// A future polled (and dropped) with its scope's frame as the current context.
#[pin_project(PinnedDrop)]
pub(crate) struct Scoped<F> {
    /// The frame, while it is not in the thread-local (it is there only during a poll or the
    /// drop of `future`).
    frame: Option<Arc<Frame>>,
    #[pin]
    future: Option<F>,
}

/// Swaps `frame` with the thread-local context: `Err` if the context is borrowed (inside
/// `with`) or the thread-local is gone (the thread is exiting).
fn swap(frame: &mut Option<Arc<Frame>>) -> Result<(), ()> {
    CURRENT
        .try_with(|current| {
            let mut current = current.try_borrow_mut().map_err(drop)?;
            std::mem::swap(frame, &mut *current);
            Ok(())
        })
        .map_err(drop)?
}

/// Runs `f` with `frame` swapped into the context, and swaps it back after, even if `f`
/// panics. `None` (without running `f`) if the swap is not possible.
fn entered<R>(frame: &mut Option<Arc<Frame>>, f: impl FnOnce() -> R) -> Option<R> {
    swap(frame).ok()?;
    let guard = scopeguard::guard(frame, |frame| {
        let _ = swap(frame); // the same swap back: the context is as we left it
    });
    let output = f();
    drop(guard);
    Some(output)
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut future = this.future;
        entered(this.frame, || {
            let poll = future
                .as_mut()
                .as_pin_mut()
                .expect("`Scoped` polled after it completed")
                .poll(cx);
            if poll.is_ready() {
                // Dropped now, still inside the scope (and the drop has nothing left to do).
                future.set(None);
            }
            poll
        })
        .expect(
            "a scope's future was polled while the scope context was borrowed (from inside a \
             `ctx::` call) or after the thread's locals were destroyed",
        )
    }
}

#[pinned_drop]
impl<F> PinnedDrop for Scoped<F> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        if std::mem::needs_drop::<F>() && this.future.is_some() {
            // Dropped inside its scope if possible; otherwise the field drops it as usual.
            let mut future = this.future;
            let _ = entered(this.frame, || future.set(None));
        }
    }
}
