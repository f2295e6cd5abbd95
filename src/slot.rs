//! [`Slot<T>`]: a cell written once with an `Arc<T>` and then read by any number of threads
//! without a lock — one slot of the shared log (`log.rs`).
//!
//! Why not `OnceLock<Arc<T>>`: its `set` goes through `Once`'s general machinery (a
//! compare-and-swap, a closure, then a swap to wake threads blocked in `get_or_init`), which
//! was 6 % of the samples of a 1 → 1 send. The log has one writer at a time (it holds the topic
//! lock) and nobody ever blocks on a slot, so one release store is enough.
//!
//! This is the crate's `unsafe` code, with its one caller in `log.rs` (whose only-reader
//! argument is there) and one `rdtsc` in `clock.rs`. The argument, checked by the loom model
//! in `tests/loom.rs` (which includes this file with loom's `Arc` and atomics):
//!
//! - `ptr` is null until [`Slot::set`], then holds `Arc::into_raw` of the value: the slot owns
//!   that one strong count until it is dropped. `set` is called at most once per slot — the
//!   writer holds the topic lock and moves past a slot once it has written it; debug builds
//!   check it. (Were it called twice, the first value would leak, nothing worse.)
//! - `set` stores the pointer with `Release`, after the `Arc` is complete; [`Slot::read`] loads
//!   it with `Acquire`. A reader that sees the pointer therefore sees the value behind it.
//! - `read` clones through the slot's own count while borrowing the slot (`&self`): the slot,
//!   and so its count, outlives the clone, so the count is at least 1 when incremented and
//!   never climbs back from 0.
//! - Or `read` hands the slot's own count to its caller and empties the slot, when the caller
//!   says it is the slot's only reader (hence an `unsafe fn`): the log marks the slots written while it had
//!   exactly one reader (`log.rs`), and readers attached later start after them. No count is
//!   taken, and the slot's `Drop` finds it empty: two atomic read-modify-writes fewer per
//!   event for a type with one default subscriber.
//! - `Drop` has `&mut self` — no reader can be looking — and gives the slot's count back, if it
//!   still has it.
//! - `Slot<T>` is `Send`/`Sync` exactly when `Arc<T>` is (the `PhantomData`), not always, as
//!   a bare `AtomicPtr` would be.
//!
//! The primitives come from `crate::atomics`: std's in the library, loom's in the model.

#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::ManuallyDrop;

use crate::atomics::{Arc, AtomicPtr, Ordering};

/// What [`Slot::read`] does with a filled slot.
pub(crate) enum Claim {
    /// Nothing: the reader must not have it.
    Leave,
    /// A clone: other readers read the slot too.
    Share,
    /// The slot's own count: the caller is the slot's only reader.
    Own,
}

/// What [`Slot::read`] found.
pub(crate) enum Look<T> {
    Empty,
    /// Filled, and left as it was ([`Claim::Leave`]).
    Left,
    Value(Arc<T>),
}

pub(crate) struct Slot<T> {
    ptr: AtomicPtr<T>,
    _owns: PhantomData<Arc<T>>,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// Fills the slot. Only the log's writer calls it, once per slot.
    #[inline]
    pub(crate) fn set(&self, value: Arc<T>) {
        debug_assert!(
            self.ptr.load(Ordering::Relaxed).is_null(),
            "a log slot is written once"
        );
        self.ptr
            .store(Arc::into_raw(value).cast_mut(), Ordering::Release);
    }

    /// Looks at the slot. If it is filled, `decide` (called only then, after the acquire load,
    /// so it sees everything that happened before the value was published) says what to do:
    /// leave it, clone it, or take the slot's own count out (the slot is then empty, and no
    /// count is taken or given back later).
    ///
    /// # Safety
    ///
    /// If `decide` returns [`Claim::Own`], no other thread may look at this slot again
    /// (`is_set`, `read`): the caller is its only reader. (Another reader would see it empty,
    /// or clone a value the caller may have dropped already.)
    #[inline]
    pub(crate) unsafe fn read(&self, decide: impl FnOnce() -> Claim) -> Look<T> {
        let ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            return Look::Empty;
        }
        let take = match decide() {
            Claim::Leave => return Look::Left,
            Claim::Share => false,
            Claim::Own => true,
        };
        if take {
            // Nobody else reads the slot (the caller's contract), and its `Drop`, which has
            // `&mut self`, is ordered after this by whatever gave it exclusive access: a plain
            // store is enough to hand the count over.
            self.ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: `ptr` came from `Arc::into_raw` in `set`, and its count was the slot's;
            // the slot is now empty, so the count is ours, once.
            return Look::Value(unsafe { Arc::from_raw(ptr) });
        }
        // SAFETY: a non-null `ptr` came from `Arc::into_raw` in `set` (module invariants), and
        // the slot holds that count while we borrow it, so the `Arc` is alive. `ManuallyDrop`
        // leaves the slot's own count untouched; the clone takes a count of its own.
        let owned = ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
        Look::Value(Arc::clone(&owned))
    }

    /// Whether the slot is filled.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        !self.ptr.load(Ordering::Acquire).is_null()
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        // `&mut self`: whatever gave us exclusive access ordered every write before this load.
        let ptr = self.ptr.load(Ordering::Relaxed);
        if !ptr.is_null() {
            // SAFETY: `ptr` came from `Arc::into_raw` in `set` and its count is the slot's,
            // given back exactly once, as the slot goes away.
            drop(unsafe { Arc::from_raw(ptr) });
        }
    }
}
