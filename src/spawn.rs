//! Scoped tasks: [`ctx::spawn`](crate::ctx::spawn) and [`TaskHandle`].
//!
//! A spawned task is a `tokio` task wrapped in [`TaskFuture`], which
//! - sets the spawning scope as the task's context (and its tracing span),
//! - is counted by the scope's tracker (`tracker.rs`) from *before* `tokio::spawn` until after
//!   the user's future has been dropped, so the scope's exit waits for it even if it never ran,
//! - watches the scope's abort node (one atomic load per poll; its waker is registered only
//!   once the task first waits) and drops the user's future when the scope aborts,
//! - catches a panic, reports it to the scope (which fails) and ends with
//!   [`TaskError::Panicked`].
//!
//! - holds its scope's [`Hold`], so every enclosing scope waits for it too, even when its own
//!   scope's `run` future was dropped,
//! - publishes `TaskSpawned` when spawned and exactly one of `TaskFinished`, `TaskFailed` or
//!   `TaskCancelled` when its future is dropped (see `system.rs`).
//!
//! - lets a [linked](crate::SubscriptionBuilder::linked) subscription cancel the task that
//!   polls it: while the user's future is polled, a thread-local says "inside a task"; the
//!   subscription turns it into "cancel", and the task ends as cancelled once that poll returns
//!   `Pending` (its future is dropped, like an abort). The previous value is restored after the
//!   poll, so a task polled from within another poll (a nested executor) cannot leak it.
//!
//! Invariants: `TaskFinished` / `TaskFailed` are published when the user's future completes
//! (it has returned or unwound, so what it held is gone); a task dropped before completing
//! publishes `TaskCancelled` after its future is dropped. Either way the task is released from
//! its scope's tracker last (at the end of `TaskFuture`'s own `drop`, then the hold, a field,
//! after it): the scope never counts a task as finished before its outcome is out.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::FutureExt;
use futures::future::CatchUnwind;
use pin_project::{pin_project, pinned_drop};
use tokio::task::JoinHandle;

use crate::abort::AbortWatch;
use crate::context;
use crate::error::{SpawnError, TaskError, panic_message};
use crate::scope::{Frame, Hold};
use crate::system::{TaskCancelled, TaskFailed, TaskFinished, TaskId, TaskSpawned};

/// A handle to a task started with [`ctx::spawn`](crate::ctx::spawn).
///
/// Awaiting it gives the task's output, or [`TaskError`] if the task was cancelled or panicked.
/// Dropping the handle does **not** cancel the task: the task still belongs to its scope, which
/// waits for it.
///
/// # Cancel safety
///
/// Awaiting a `TaskHandle` is cancel-safe: dropping the `await` leaves the task running and the
/// handle can be awaited again.
///
/// ```
/// use scopebus::{ctx, TaskError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let answer = ctx::spawn(async { 6 * 7 });
///     assert_eq!(answer.await, Ok(42));
///
///     let forever = ctx::spawn(std::future::pending::<()>());
///     forever.abort(); // an aborted task is not a failure of the scope
///     assert_eq!(forever.await, Err(TaskError::Cancelled));
/// }).await;
/// # }
/// ```
pub struct TaskHandle<T> {
    join: JoinHandle<Result<T, TaskError>>,
}

impl<T> TaskHandle<T> {
    /// Cancels the task: its future is dropped at its next `await` point. Awaiting the handle
    /// then gives [`TaskError::Cancelled`] (unless the task had already finished). Aborting a
    /// task is not a failure of its scope.
    pub fn abort(&self) {
        self.join.abort();
    }

    /// `true` once the task has finished, in any way.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(Pin::new(&mut self.join).poll(cx)) {
            Ok(result) => result,
            Err(error) if error.is_panic() => {
                Err(TaskError::Panicked(panic_message(&*error.into_panic())))
            }
            Err(_) => Err(TaskError::Cancelled),
        })
    }
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Where the current poll is, for linked subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not inside the poll of a `ctx::spawn` task.
    Outside,
    /// Inside a task's poll.
    InTask,
    /// Inside a task's poll, and a linked subscription asked to cancel the task.
    Cancel,
}

thread_local! {
    static LINK: Cell<Link> = const { Cell::new(Link::Outside) };
}

/// Asks the `ctx::spawn` task being polled to end as cancelled once its poll returns `Pending`.
/// `false` when not called from inside such a task.
pub(crate) fn cancel_current_task() -> bool {
    LINK.with(|link| match link.get() {
        Link::Outside => false,
        Link::InTask | Link::Cancel => {
            link.set(Link::Cancel);
            true
        }
    })
}

type Guarded<F> = context::Scoped<CatchUnwind<AssertUnwindSafe<F>>>;

/// A user future as run by a scope (see the module documentation).
///
/// Kept small: a parked task's memory is this plus the user's future. The scope's span is
/// entered from `frame` on each poll (no clone of the span), the abort node is reached through
/// `frame`, and the outcome is published when known rather than stored.
#[pin_project(PinnedDrop)]
struct TaskFuture<F: Future> {
    /// `None` once dropped (in `drop`, inside the span and before the outcome is published).
    #[pin]
    inner: Option<Guarded<F>>,
    watch: AbortWatch,
    frame: Arc<Frame>,
    task: TaskId,
    /// The outcome was published (`TaskFinished` or `TaskFailed`); otherwise dropping the task
    /// publishes `TaskCancelled`.
    done: bool,
    _hold: Option<Arc<Hold>>,
}

impl<F: Future> Future for TaskFuture<F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let abort = this.frame.abort_node();
        if abort.is_aborted() {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(TaskError::Cancelled)); // polled after completion
        };
        let outer = LINK.replace(Link::InTask);
        let poll = {
            let _span = this.frame.span.enter();
            inner.poll(cx)
        };
        let link = LINK.replace(outer);
        // Watch the abort only once the task waits: a task that completes on its first poll
        // never touches the abort node's lock.
        if poll.is_pending() && (link == Link::Cancel || this.watch.poll_aborted(abort.flag(), cx))
        {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        let frame: &Frame = this.frame;
        let (bus, origin, task) = (&frame.bus, || frame.info(), *this.task);
        Poll::Ready(match ready!(poll) {
            Ok(value) => {
                // The user's future has returned: everything it held is gone already.
                *this.done = true;
                bus.publish_with(|| {
                    let origin = origin();
                    let scope = origin.clone();
                    (origin, TaskFinished { scope, task })
                });
                Ok(value)
            }
            Err(payload) => {
                // Unwound: likewise, its locals were dropped by the panic.
                let message = panic_message(&*payload);
                *this.done = true;
                bus.publish_with(|| {
                    let origin = origin();
                    let scope = origin.clone();
                    let message = message.clone();
                    (
                        origin,
                        TaskFailed {
                            scope,
                            task,
                            message,
                        },
                    )
                });
                this.frame.fail(payload);
                Err(TaskError::Panicked(message))
            }
        })
    }
}

#[pinned_drop]
impl<F: Future> PinnedDrop for TaskFuture<F> {
    /// Drops the user's future inside the scope's span, then publishes `TaskCancelled` if the
    /// task never completed. The task is released from its scope's tracker at the very end
    /// (and the hold, a field, after that), so the scope never counts the task as gone before
    /// its outcome is out.
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        let frame: &Frame = this.frame;
        // Released last, and even if the future's `Drop` panics: the scope must not wait for
        // a task that is gone.
        let _release = scopeguard::guard((), |()| frame.tasks.release());
        {
            let _span = frame.span.enter();
            this.inner.set(None);
        }
        this.watch.release(frame.abort_node().flag());
        if !*this.done {
            let task = *this.task;
            frame.bus.publish_with(|| {
                let origin = frame.info();
                let scope = origin.clone();
                (origin, TaskCancelled { scope, task })
            });
        }
    }
}

/// Starts `future` as a task of `frame`'s scope.
pub(crate) fn spawn_in<F>(
    frame: &Arc<Frame>,
    future: F,
) -> Result<TaskHandle<F::Output>, SpawnError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if frame.is_finished() {
        return Err(SpawnError::ScopeFinished);
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
    let task = TaskId::next();
    frame.bus.publish_with(|| {
        let origin = frame.info();
        let scope = origin.clone();
        (origin, TaskSpawned { scope, task })
    });
    // Counted now, released at the end of the task's drop (even if it is never polled).
    frame.tasks.add();
    let task = TaskFuture {
        inner: Some(context::scoped(
            frame.clone(),
            AssertUnwindSafe(future).catch_unwind(),
        )),
        watch: AbortWatch::new(),
        frame: frame.clone(),
        task,
        done: false,
        _hold: frame.hold(),
    };
    Ok(TaskHandle {
        join: runtime.spawn(task),
    })
}
#[cfg(test)]
mod tests {
    /// A parked subscriber's task is `tokio`'s task allocation around this wrapper: 256 bytes
    /// while the wrapped future is at most 152, 384 above. Keeping the wrapper's own share small
    /// (the frame, the hold, the task id, a 4-byte abort watch, and the context's frame slot)
    /// keeps a typical subscriber loop (under 100 bytes) in the 256-byte class.
    #[test]
    fn the_task_wrapper_adds_at_most_56_bytes() {
        let user = size_of::<std::future::Ready<[u8; 88]>>();
        let wrapped = size_of::<super::TaskFuture<std::future::Ready<[u8; 88]>>>();
        assert!(
            wrapped - user <= 56,
            "the wrapper adds {} bytes",
            wrapped - user
        );
    }
}
