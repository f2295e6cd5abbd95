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

/// How many wakers a [`WakeList`] holds before it wakes them in place.
const WAKE_BATCH: usize = 32;

/// A fixed-size batch of wakers, woken after the caller has released its locks.
pub(crate) struct WakeList {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
}

impl WakeList {
    pub(crate) fn new() -> Self {
        Self {
            wakers: std::array::from_fn(|_| None),
            len: 0,
        }
    }

    /// Adds a waker; when the batch is full the batch is woken at once (rare: more than
    /// `WAKE_BATCH` parked subscribers reached by one send).
    pub(crate) fn push(&mut self, waker: Waker) {
        if self.len == WAKE_BATCH {
            self.wake_all();
        }
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    pub(crate) fn wake_all(&mut self) {
        for slot in &mut self.wakers[..self.len] {
            if let Some(waker) = slot.take() {
                waker.wake();
            }
        }
        self.len = 0;
    }
}

impl Drop for WakeList {
    fn drop(&mut self) {
        self.wake_all();
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

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key)?.as_mut()
    }

    /// Removes and returns every value.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.free.clear();
        std::mem::take(&mut self.entries).into_iter().flatten()
    }
}
