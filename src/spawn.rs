//! Scoped tasks: [`ctx::spawn`](crate::ctx::spawn) and [`TaskHandle`].
//!
//! A spawned task is a `tokio` task wrapped in [`TaskFuture`], which
//! - sets the spawning scope as the task's context (and its tracing span),
//! - is counted by the scope's `TaskTracker` from *before* `tokio::spawn` until after the user's
//!   future has been dropped, so the scope's exit waits for it even if it never ran,
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
//! Invariants: fields of `TaskFuture` drop in declaration order, so `inner` (the user's future)
//! is dropped first, then the outcome event is published, then the tracker token and the hold
//! are released — the scope never counts a task as finished before its outcome is out.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::FutureExt;
use futures::future::CatchUnwind;
use pin_project::pin_project;
use tokio::task::JoinHandle;
use tokio::task::futures::TaskLocalFuture;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;
use tracing::instrument::Instrumented;

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

type Guarded<F> = Instrumented<TaskLocalFuture<Arc<Frame>, CatchUnwind<AssertUnwindSafe<F>>>>;

/// A user future as run by a scope (see the module documentation).
#[pin_project]
struct TaskFuture<F: Future> {
    #[pin]
    inner: Guarded<F>,
    watch: AbortWatch,
    frame: Arc<Frame>,
    /// Publishes the task's outcome when dropped: after the user's future, before the token.
    events: TaskEvents,
    _token: TaskTrackerToken,
    _hold: Option<Arc<Hold>>,
}

impl<F: Future> Future for TaskFuture<F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.watch.is_aborted() {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        let outer = LINK.replace(Link::InTask);
        let poll = this.inner.poll(cx);
        let link = LINK.replace(outer);
        // Watch the abort only once the task waits: a task that completes on its first poll
        // never touches the abort node's lock.
        if poll.is_pending() && (link == Link::Cancel || this.watch.poll_aborted(cx)) {
            return Poll::Ready(Err(TaskError::Cancelled));
        }
        Poll::Ready(match ready!(poll) {
            Ok(value) => {
                this.events.outcome = Some(Ok(()));
                Ok(value)
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                this.events.outcome = Some(Err(message.clone()));
                this.frame.fail(payload);
                Err(TaskError::Panicked(message))
            }
        })
    }
}

/// Publishes a task's outcome on its scope's bus when dropped: `TaskFinished`, `TaskFailed`,
/// or — if the task never completed (aborted) — `TaskCancelled`.
struct TaskEvents {
    frame: Arc<Frame>,
    task: TaskId,
    /// `Ok` for a value, `Err(message)` for a panic, `None` if cancelled.
    outcome: Option<Result<(), String>>,
}

impl Drop for TaskEvents {
    fn drop(&mut self) {
        let (bus, origin, task) = (&self.frame.bus, &self.frame.info, self.task);
        let scope = || origin.clone();
        match self.outcome.take() {
            Some(Ok(())) => bus.publish_with(origin, || TaskFinished {
                scope: scope(),
                task,
            }),
            Some(Err(message)) => bus.publish_with(origin, || TaskFailed {
                scope: scope(),
                task,
                message,
            }),
            None => bus.publish_with(origin, || TaskCancelled {
                scope: scope(),
                task,
            }),
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
    frame.bus.publish_with(&frame.info, || TaskSpawned {
        scope: frame.info.clone(),
        task,
    });
    let task = TaskFuture {
        inner: context::scoped(frame.clone(), AssertUnwindSafe(future).catch_unwind())
            .instrument(frame.span.clone()),
        watch: AbortWatch::new(frame.abort.clone()),
        frame: frame.clone(),
        events: TaskEvents {
            frame: frame.clone(),
            task,
            outcome: None,
        },
        _token: frame.tasks.token(),
        _hold: frame.hold(),
    };
    Ok(TaskHandle {
        join: runtime.spawn(task),
    })
}
