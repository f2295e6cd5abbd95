//! An abort node's flag and the wakers of the tasks parked on it ([`AbortFlag`]), and one
//! task's registration ([`AbortWatch`]). Written against `crate::atomics` so that
//! `tests/loom.rs` can model this very file.
//!
//! Invariants:
//! - `aborted` only goes from `false` to `true`.
//! - No lost wake-up: a watcher registers its waker under the lock after checking `aborted`
//!   under that same lock, and [`raise`](AbortFlag::raise) sets `aborted` before taking the
//!   lock to drain the wakers, so a watcher either sees the flag or has its waker drained and
//!   woken.
//! - A waker is woken at most once, and a watch that leaves (its task dropped) takes its entry
//!   out, so nothing is left in the list.
//!
//! Lock order: the wakers' lock is a leaf; wakers are woken after it is released.

use std::task::{Context, Waker};

use crate::atomics::{AtomicBool, Mutex, Ordering};
use crate::sync::{Slab, lock};

pub(crate) struct AbortFlag {
    aborted: AtomicBool,
    wakers: Mutex<Slab<Waker>>,
}

impl AbortFlag {
    pub(crate) fn new(aborted: bool) -> Self {
        Self {
            aborted: AtomicBool::new(aborted),
            wakers: Mutex::new(Slab::new()),
        }
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Raises the flag and wakes every parked watcher; `false` if it was raised already.
    pub(crate) fn raise(&self) -> bool {
        if self.aborted.swap(true, Ordering::AcqRel) {
            return false;
        }
        let wakers: Vec<Waker> = lock(&self.wakers).drain().collect();
        for waker in wakers {
            waker.wake();
        }
        true
    }
}

/// One task's registration with its scope's [`AbortFlag`], polled alongside the task.
///
/// Kept to four bytes, since every parked task carries one (with the rest of `TaskFuture`, it
/// decides whether a task fits `tokio`'s 256-byte task allocation or takes 384): the flag is
/// passed in (the task reaches it through its frame), and the waker is registered once, on the
/// first poll that waits, and never compared again — a `tokio` task is always polled with a
/// waker for itself, and the watch is only used by `TaskFuture`, which is always a `tokio` task
/// of its own.
pub(crate) struct AbortWatch {
    /// The waker's key in the flag's slab once registered, [`UNREGISTERED`] before.
    key: u32,
}

const UNREGISTERED: u32 = u32::MAX;

impl AbortWatch {
    pub(crate) fn new() -> Self {
        Self { key: UNREGISTERED }
    }

    /// `true` once `flag` is raised; otherwise makes sure the task is woken when it is.
    pub(crate) fn poll_aborted(&mut self, flag: &AbortFlag, cx: &mut Context<'_>) -> bool {
        if flag.is_aborted() {
            return true;
        }
        if self.key != UNREGISTERED {
            return false;
        }
        let mut wakers = lock(&flag.wakers);
        if flag.is_aborted() {
            return true;
        }
        let key = wakers.insert(cx.waker().clone());
        self.key = u32::try_from(key)
            .ok()
            .filter(|&key| key != UNREGISTERED)
            .expect("fewer than 2^32 - 1 tasks of one scope wait at once");
        false
    }

    /// Deregisters from `flag` (the watch's owner calls this when it is dropped).
    pub(crate) fn release(&mut self, flag: &AbortFlag) {
        let key = std::mem::replace(&mut self.key, UNREGISTERED);
        if key != UNREGISTERED {
            lock(&flag.wakers).remove(key as usize);
        }
    }
}
