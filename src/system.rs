//! System events: what the library itself publishes, as ordinary typed events.
//!
//! Which bus each appears on (isolation holds: nothing from inside an isolated scope reaches
//! its parent's bus except the scope's own start and stop, which belong to the parent):
//!
//! | event | published on |
//! |---|---|
//! | [`ScopeStarted`], [`ScopeStopped`] | the **parent's** bus (the scope that contains it); a root scope has none, so its lifecycle is only traced |
//! | [`TaskSpawned`], [`TaskFinished`], [`TaskFailed`], [`TaskCancelled`] | the bus of the task's scope |
//! | [`EventDropped`] | the bus where a critical subscription lost the event |
//! | [`DeadLetter`] (opt-in: [`Scope::dead_letters`](crate::Scope::dead_letters)) | the bus where nobody received the event |
//!
//! Invariants: a system event is published with no lock of the crate held (it is an ordinary
//! send); no system event is published about a system event of the same kind (a full subscriber
//! of `EventDropped` does not produce `EventDropped`, a `DeadLetter` nobody reads is not a dead
//! letter), so nothing recurses. A send with no subscriber costs what any such send costs.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::delivery::DropReport;
use crate::scope::{ScopeId, ScopeInfo};

/// A task's process-unique identifier, as carried by the task events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u64);

impl TaskId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The identifier as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A scope was entered. Published on its parent's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScopeStarted {
    /// The scope.
    pub scope: Arc<ScopeInfo>,
    /// Its parent.
    pub parent: ScopeId,
    /// Whether it owns a bus of its own.
    pub isolated: bool,
}

/// How a scope ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeOutcome {
    /// The body completed and every task finished.
    Finished,
    /// The body or a task panicked, with this message; `run` resumes the panic.
    Failed(String),
    /// The `run` future was dropped before the scope finished.
    Cancelled,
}

/// A scope has fully exited. Published on its parent's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScopeStopped {
    /// The scope.
    pub scope: Arc<ScopeInfo>,
    /// How it ended.
    pub outcome: ScopeOutcome,
}

/// A task was started with `ctx::spawn`. Published on its scope's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskSpawned {
    /// The task's scope.
    pub scope: Arc<ScopeInfo>,
    /// The task.
    pub task: TaskId,
}

/// A task returned a value. Published on its scope's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskFinished {
    /// The task's scope.
    pub scope: Arc<ScopeInfo>,
    /// The task.
    pub task: TaskId,
}

/// A task panicked (its scope fails). Published on its scope's bus, once per task.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskFailed {
    /// The task's scope.
    pub scope: Arc<ScopeInfo>,
    /// The task.
    pub task: TaskId,
    /// The panic message.
    pub message: String,
}

/// A task was cancelled (aborted, or stopped by its scope). Published on its scope's bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskCancelled {
    /// The task's scope.
    pub scope: Arc<ScopeInfo>,
    /// The task.
    pub task: TaskId,
}

/// A critical subscription lost an event: the same report the drop callback gets. Published on
/// the bus where it happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventDropped {
    /// What was lost, by whom.
    pub report: DropReport,
}

/// An event that reached no subscription. Published only on buses that asked for it with
/// [`Scope::dead_letters`](crate::Scope::dead_letters).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// `std::any::type_name` of the undelivered event.
    pub event_type: &'static str,
    /// The scope that sent it.
    pub origin: Arc<ScopeInfo>,
}
