//! Small synchronisation helpers shared by the other modules.
//!
//! Invariants:
//! - No lock in this crate is ever held while user code runs (payload `Drop` included), so a
//!   poisoned mutex can only come from a bug in the crate itself. [`lock`] therefore ignores
//!   poisoning instead of turning one panic into a cascade of panics.
//! - [`WakeList`] lets a sender collect wakers while it holds locks and wake them after releasing
//!   every lock, so a woken task never contends with the sender that woke it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

/// Locks `mutex`, ignoring poisoning (see the module invariants).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many wakers a [`WakeList`] holds inline (more go to a `Vec`).
const WAKE_INLINE: usize = 4;

/// The wakers a send collects under its locks, woken after the caller has released them with
/// [`wake_all`](WakeList::wake_all). (No `Drop` that wakes: every path that pushes a waker
/// calls `wake_all`, and the drop glue of an empty list stays a few checks on the hot path.)
/// Small inline (creating and dropping an empty list is a few stores, on every send); a send
/// that reaches more parked subscribers than that spills to a `Vec`, never waking under a lock.
pub(crate) struct WakeList {
    inline: [Option<Waker>; WAKE_INLINE],
    len: usize,
    more: Vec<Waker>,
}

impl WakeList {
    pub(crate) fn new() -> Self {
        Self {
            inline: [None, None, None, None],
            len: 0,
            more: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, waker: Waker) {
        if self.len < WAKE_INLINE {
            self.inline[self.len] = Some(waker);
            self.len += 1;
        } else {
            self.more.push(waker);
        }
    }

    /// Moves every waker of `other` into this list.
    pub(crate) fn append(&mut self, mut other: WakeList) {
        let len = other.len;
        other.len = 0;
        for slot in &mut other.inline[..len] {
            if let Some(waker) = slot.take() {
                self.push(waker);
            }
        }
        for waker in other.more.drain(..) {
            self.push(waker);
        }
    }

    #[inline]
    pub(crate) fn wake_all(&mut self) {
        if self.len == 0 {
            return; // nothing inline means nothing spilled either
        }
        for slot in &mut self.inline[..self.len] {
            if let Some(waker) = slot.take() {
                waker.wake();
            }
        }
        self.len = 0;
        if !self.more.is_empty() {
            for waker in self.more.drain(..) {
                waker.wake();
            }
        }
    }
}

/// A minimal slab: stable `usize` keys, O(1) insert and remove, slots reused.
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    pub(crate) const fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.entries[key] = Some(value);
                key
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.entries.get_mut(key)?.take();
        if value.is_some() {
            self.free.push(key);
        }
        value
    }

    /// Removes and returns every value.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.free.clear();
        std::mem::take(&mut self.entries).into_iter().flatten()
    }
}
