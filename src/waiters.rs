//! The parked readers of one log ([`Waiters`]), and the flag a write checks: written against
//! the primitives of `crate::atomics` so that `tests/loom.rs` can model this very file.
//!
//! Invariant (no lost wake-up): a reader registers its waker, raises `parked`, then, after a
//! `SeqCst` fence, looks at its slot again; a write fills the slot, fences (`SeqCst`), then
//! reads `parked` and takes the wakers if it is raised. Of the two store → fence → load
//! sequences at least one sees the other's store: either the reader sees the slot filled, or
//! the writer sees `parked` and wakes it. A send with no parked reader costs one fence and one
//! load. The generation tells a reader whether its entry is still in the list.
//!
//! Lock order: the list's lock is a leaf (taken under the topic lock by a write, alone by a
//! reader).

use crate::atomics::{AtomicBool, Mutex, Ordering, fence};
use crate::sync::{WakeList, lock};
use std::task::Waker;

/// The parked readers of one log, with the flag a write checks (see the module invariants).
pub(crate) struct Waiters {
    parked: AtomicBool,
    list: Mutex<WaiterList>,
}

struct WaiterList {
    wakers: Vec<(u64, Waker)>,
    /// Bumped each time a write takes the wakers: a reader registered in the current
    /// generation is still in the list.
    generation: u64,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            parked: AtomicBool::new(false),
            list: Mutex::new(WaiterList {
                wakers: Vec::new(),
                generation: 0,
            }),
        }
    }

    /// After a write (topic lock held): takes the parked readers' wakers, to wake once the lock
    /// is released. `None` (nothing built) when no reader is parked.
    #[inline]
    pub(crate) fn after_write(&self) -> Option<WakeList> {
        fence(Ordering::SeqCst);
        if !self.parked.load(Ordering::Relaxed) {
            return None;
        }
        let mut wakers = WakeList::new();
        let mut list = lock(&self.list);
        self.parked.store(false, Ordering::Relaxed);
        list.generation += 1;
        for (_, waker) in list.wakers.drain(..) {
            wakers.push(waker);
        }
        Some(wakers)
    }

    /// Takes every waker (the log's readers are all ending).
    pub(crate) fn take_all(&self) -> Vec<Waker> {
        let mut list = lock(&self.list);
        list.generation += 1;
        list.wakers.drain(..).map(|(_, waker)| waker).collect()
    }

    /// Takes reader `id`'s waker, if parked (it is ending or going away).
    pub(crate) fn take(&self, id: u64) -> Option<Waker> {
        let mut list = lock(&self.list);
        let index = list.wakers.iter().position(|(waiter, _)| *waiter == id)?;
        Some(list.wakers.swap_remove(index).1)
    }

    /// Registers `waker` for reader `id`. `registered` (kept by the reader) is the generation
    /// it last registered in: if that is still the current one, its entry is still in the list
    /// and is only updated if the waker changed (a re-poll without a wake-up).
    pub(crate) fn register(&self, id: u64, waker: &Waker, registered: &mut u64) {
        let mut list = lock(&self.list);
        let generation = list.generation;
        let entry = if *registered == generation {
            list.wakers.iter_mut().find(|(waiter, _)| *waiter == id)
        } else {
            None
        };
        match entry {
            Some((_, parked)) => {
                if !parked.will_wake(waker) {
                    parked.clone_from(waker);
                }
            }
            None => {
                list.wakers.push((id, waker.clone()));
                *registered = generation;
            }
        }
        self.parked.store(true, Ordering::Relaxed);
        drop(list);
        fence(Ordering::SeqCst);
    }
}
