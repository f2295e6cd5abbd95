//! Loom models of the crate's custom synchronisation: the log slot (`src/slot.rs`, its `unsafe`
//! code), the parked readers' waiter list (`src/waiters.rs`, a flag and two fences) and the
//! scope's task tracker (`src/tracker.rs`, a counter and an `AtomicWaker`) and the abort flag
//! tasks watch (`src/abort_flag.rs`, a flag and a waker list), and a paused bus's gate
//! (`src/gate.rs`, a flag read outside its lock).
//!
//! The file includes those two files themselves, with loom's `Arc`, `Mutex` and atomics in place
//! of std's, and explores every interleaving of writers and readers (within loom's bounds). Run
//! it with
//!
//! ```text
//! RUSTFLAGS="--cfg scopebus_loom" cargo test --release --test loom
//! ```
//!
//! (`./scripts/test` does, in its own target directory.) What it checks:
//! - a reader that sees the slot filled sees everything the writer did before filling it (the
//!   payload is written through loom's `UnsafeCell`, so a missing `Release`/`Acquire` pair is
//!   reported as a data race);
//! - clones taken while other readers clone and drop, and the slot's own count given back
//!   when it is dropped, balance exactly: loom fails a run that leaks an `Arc` or frees one
//!   twice;
//! - a sole reader that takes the slot's count (while the writer and the slot's last holder
//!   race it) sees the payload, and the count is given back exactly once — by the reader's
//!   handle, not by the slot;
//! - a reader that parks while a write happens is either woken or sees the write (no lost
//!   wake-up), also when it parks again after a first wake-up and when it leaves the list (a
//!   subscription dropped) while a write takes the wakers;
//! - a scope's exit waiting on its task tracker while the last tasks are released and the
//!   tracker is closed is woken, or finds the tracker done (`src/tracker.rs`);
//! - a task that starts watching its scope's abort flag while the scope aborts sees the flag or
//!   is woken, exactly once, and a task dropped meanwhile leaves nothing registered
//!   (`src/abort_flag.rs`);
//! - a paused bus's gate delivers what it held before any later send, even one racing the
//!   `start`, and a sender waiting for room in a full buffer is woken when `start` takes it
//!   (`src/gate.rs`).
#![cfg(scopebus_loom)]

mod atomics {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, fence};
    pub(crate) use loom::sync::{Arc, Mutex};

    /// loom's `AtomicWaker` with the signature of `futures`' (register by reference).
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            Self(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }
}

/// What `waiters.rs` takes from the crate's `sync` module, for loom's `Mutex`.
mod sync {
    use std::task::Waker;

    pub(crate) fn lock<T>(mutex: &loom::sync::Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap()
    }

    /// The crate's slab, as `abort_flag.rs` uses it: keys stay valid until removed.
    pub(crate) struct Slab<T>(Vec<Option<T>>);

    impl<T> Slab<T> {
        pub(crate) fn new() -> Self {
            Self(Vec::new())
        }

        pub(crate) fn insert(&mut self, value: T) -> usize {
            self.0.push(Some(value));
            self.0.len() - 1
        }

        pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
            self.0.get_mut(key)?.take()
        }

        pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
            self.0.drain(..).flatten()
        }
    }

    pub(crate) struct WakeList(Vec<Waker>);

    impl WakeList {
        pub(crate) fn new() -> Self {
            Self(Vec::new())
        }

        pub(crate) fn push(&mut self, waker: Waker) {
            self.0.push(waker);
        }

        pub(crate) fn wake_all(&mut self) {
            self.0.drain(..).for_each(Waker::wake);
        }
    }
}

#[path = "../src/slot.rs"]
mod slot;

#[path = "../src/waiters.rs"]
mod waiters;

#[path = "../src/tracker.rs"]
mod tracker;

#[path = "../src/abort_flag.rs"]
mod abort_flag;

#[path = "../src/gate.rs"]
mod gate;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use slot::{Claim, Look, Slot};

/// A payload written non-atomically after its allocation, as an envelope's sequence number is.
struct Payload(UnsafeCell<u64>);

// SAFETY (test): written only before the slot publishes it, read only after.
unsafe impl Sync for Payload {}

fn filled(value: u64) -> Arc<Payload> {
    let payload = Arc::new(Payload(UnsafeCell::new(0)));
    // SAFETY (test): not shared yet.
    payload.0.with_mut(|v| unsafe { *v = value });
    payload
}

/// A clone of the slot's value, if filled.
fn get(slot: &Slot<Payload>) -> Option<Arc<Payload>> {
    // SAFETY (test): `Claim::Share` never takes the slot's count, so any number of readers may
    // call this.
    match unsafe { slot.read(|| Claim::Share) } {
        Look::Value(payload) => Some(payload),
        Look::Empty | Look::Left => None,
    }
}

/// The slot's own count, if filled (the caller must be its only reader).
fn take(slot: &Slot<Payload>) -> Option<Arc<Payload>> {
    // SAFETY (test): each caller is its slot's only reader.
    match unsafe { slot.read(|| Claim::Own) } {
        Look::Value(payload) => Some(payload),
        Look::Empty | Look::Left => None,
    }
}

fn read(payload: &Payload) -> u64 {
    // SAFETY (test): published by the slot, never written again.
    payload.0.with(|v| unsafe { *v })
}

#[test]
fn a_reader_that_sees_the_slot_sees_the_payload() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                if slot.is_set() {
                    let payload = get(&slot).expect("a set slot stays set");
                    assert_eq!(read(&payload), 42);
                } else if let Some(payload) = get(&slot) {
                    assert_eq!(read(&payload), 42);
                }
            })
        };
        slot.set(filled(42));
        reader.join().unwrap();
    });
}

#[test]
fn clones_and_the_slot_give_back_every_count() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let slot = slot.clone();
                thread::spawn(move || {
                    // Keep one clone past the reader's borrow of the slot, drop the other.
                    let kept = get(&slot);
                    drop(get(&slot));
                    drop(slot);
                    kept.map(|payload| read(&payload))
                })
            })
            .collect();
        slot.set(filled(7));
        drop(slot); // the last holder of the slot drops it, whichever thread that is
        for reader in readers {
            if let Some(value) = reader.join().unwrap() {
                assert_eq!(value, 7);
            }
        }
    });
}

#[test]
fn a_sole_reader_takes_the_count_and_gives_it_back_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                let taken = take(&slot); // this thread is the slot's only reader
                drop(slot); // perhaps the slot's last holder, before the payload is dropped
                taken.map(|payload| read(&payload))
            })
        };
        slot.set(filled(9));
        drop(slot);
        if let Some(value) = reader.join().unwrap() {
            assert_eq!(value, 9);
        }
    });
}

#[test]
fn a_slot_never_filled_drops_nothing() {
    loom::model(|| {
        let slot: Slot<Payload> = Slot::new();
        assert!(get(&slot).is_none());
        assert!(take(&slot).is_none());
        assert!(!slot.is_set());
    });
}

/// A waker that records whether it was woken (the flag is read after the threads joined).
struct Woken(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Woken {
    fn wake_by_ref(this: &std::sync::Arc<Self>) {
        this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn woken() -> (std::sync::Arc<Woken>, std::task::Waker) {
    let flag = std::sync::Arc::new(Woken(std::sync::atomic::AtomicUsize::new(0)));
    let waker = futures::task::waker(flag.clone());
    (flag, waker)
}

/// A write as the topic does it: fill the slot, then wake whoever parked.
fn write(filled: &loom::sync::atomic::AtomicUsize, waiters: &waiters::Waiters) {
    filled.fetch_add(1, loom::sync::atomic::Ordering::Release);
    if let Some(mut wakers) = waiters.after_write() {
        wakers.wake_all();
    }
}

#[test]
fn a_reader_that_parks_during_a_write_is_woken_or_sees_it() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    loom::model(|| {
        let waiters = Arc::new(waiters::Waiters::new());
        let filled = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (waiters, filled) = (waiters.clone(), filled.clone());
            thread::spawn(move || write(&filled, &waiters))
        };
        // The reader's poll: look, park, look again.
        let (flag, waker) = woken();
        let mut registered = u64::MAX;
        let saw = filled.load(Ordering::Acquire) == 1 || {
            waiters.register(1, &waker, &mut registered);
            filled.load(Ordering::Acquire) == 1
        };
        writer.join().unwrap();
        let woken = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(saw || woken == 1, "a lost wake-up");
    });
}

#[test]
fn a_reader_parking_again_after_a_wake_up_is_not_forgotten() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    loom::model(|| {
        let waiters = Arc::new(waiters::Waiters::new());
        let filled = Arc::new(AtomicUsize::new(0));
        let (flag, waker) = woken();
        let mut registered = u64::MAX;
        // Parked once before anything happens.
        waiters.register(1, &waker, &mut registered);
        let writer = {
            let (waiters, filled) = (waiters.clone(), filled.clone());
            thread::spawn(move || {
                write(&filled, &waiters);
                write(&filled, &waiters);
            })
        };
        // Woken (or not yet) by the first write: it reads, then parks again.
        let mut seen = filled.load(Ordering::Acquire);
        if seen < 2 {
            waiters.register(1, &waker, &mut registered);
            seen = filled.load(Ordering::Acquire);
        }
        writer.join().unwrap();
        let wakes = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        // The second write either was seen, or found the reader parked and woke it (the
        // first write's wake-up alone is not enough if the reader parked again after it).
        assert!(seen == 2 || wakes >= 1, "seen {seen}, woken {wakes} times");
        assert!(wakes <= 2);
    });
}

#[test]
fn a_reader_leaving_while_a_write_takes_the_wakers_is_woken_at_most_once() {
    loom::model(|| {
        let waiters = Arc::new(waiters::Waiters::new());
        let filled = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let (flag, waker) = woken();
        let mut registered = u64::MAX;
        waiters.register(7, &waker, &mut registered);
        let writer = {
            let (waiters, filled) = (waiters.clone(), filled.clone());
            thread::spawn(move || write(&filled, &waiters))
        };
        // The subscription is dropped: its waker leaves the list, if still there.
        let taken = waiters.take(7);
        writer.join().unwrap();
        let wakes = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        // Either the write took (and woke) it, or the reader took it back: never both.
        assert_eq!(usize::from(taken.is_some()) + wakes, 1);
        assert!(waiters.take_all().is_empty(), "nothing left in the list");
    });
}

#[test]
fn a_scope_exit_waiting_on_its_tracker_is_woken_or_finds_it_done() {
    use std::future::Future;
    use std::task::{Context, Poll};
    loom::model(|| {
        let tracker = Arc::new(tracker::Tracker::new());
        tracker.add(); // a task
        tracker.add(); // a nested scope's hold
        let releasing = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                tracker.release();
                tracker.release();
            })
        };
        let closing = {
            let tracker = tracker.clone();
            thread::spawn(move || tracker.close())
        };
        // The exit's first poll, racing both.
        let (flag, waker) = woken();
        let mut wait = Box::pin(tracker.wait());
        let first = wait.as_mut().poll(&mut Context::from_waker(&waker));
        releasing.join().unwrap();
        closing.join().unwrap();
        if first.is_pending() {
            let wakes = flag.0.load(std::sync::atomic::Ordering::SeqCst);
            assert!(wakes >= 1, "the exit waits, and nobody will wake it");
            let again = wait.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(matches!(again, Poll::Ready(())), "woken, and done");
        }
    });
}

#[test]
fn a_task_watching_its_abort_flag_while_the_scope_aborts_sees_it_or_is_woken_once() {
    use std::task::Context;
    loom::model(|| {
        let flag = Arc::new(abort_flag::AbortFlag::new(false));
        let aborting = {
            let flag = flag.clone();
            thread::spawn(move || assert!(flag.raise(), "raised once"))
        };
        let (woken, waker) = woken();
        let mut watch = abort_flag::AbortWatch::new();
        let saw = watch.poll_aborted(&flag, &mut Context::from_waker(&waker));
        aborting.join().unwrap();
        let wakes = woken.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(saw || wakes == 1, "neither saw the abort nor was woken");
        assert!(wakes <= 1);
        assert!(!flag.raise(), "only once");
        watch.release(&flag);
    });
}

#[test]
fn a_task_dropped_while_its_scope_aborts_leaves_nothing_registered() {
    use std::task::Context;
    loom::model(|| {
        let flag = Arc::new(abort_flag::AbortFlag::new(false));
        let (woken, waker) = woken();
        let mut watch = abort_flag::AbortWatch::new();
        assert!(!watch.poll_aborted(&flag, &mut Context::from_waker(&waker)));
        let aborting = {
            let flag = flag.clone();
            thread::spawn(move || flag.raise())
        };
        watch.release(&flag); // the task is dropped
        aborting.join().unwrap();
        assert!(woken.0.load(std::sync::atomic::Ordering::SeqCst) <= 1);
        // The abort drained the list, or the release emptied it first: either way a second
        // watcher now sees the flag at once.
        let mut late = abort_flag::AbortWatch::new();
        assert!(late.poll_aborted(&flag, &mut Context::from_waker(&waker)));
    });
}

/// A send through the gate, as the bus does it: straight on when the gate is down, else
/// admitted (held, or handed back to go straight on).
fn send_through(gate: &gate::Gate<u32>, out: &loom::sync::Mutex<Vec<u32>>, v: u32) {
    if gate.is_gated() {
        match gate.admit(v, |v| v, None) {
            gate::Admit::Open(v) => out.lock().unwrap().push(v),
            gate::Admit::Held => {}
            gate::Admit::Full(_) | gate::Admit::Dropped { .. } => panic!("room for both"),
        }
    } else {
        out.lock().unwrap().push(v);
    }
}

#[test]
fn held_events_are_delivered_before_a_send_racing_the_start() {
    use loom::sync::Mutex;
    loom::model(|| {
        let gate = Arc::new(gate::Gate::<u32>::new(true, 4));
        let out = Arc::new(Mutex::new(Vec::new()));
        send_through(&gate, &out, 1); // paused: held
        let starting = {
            let (gate, out) = (gate.clone(), out.clone());
            thread::spawn(move || gate.start(|v| out.lock().unwrap().push(v)))
        };
        send_through(&gate, &out, 2);
        starting.join().unwrap();
        assert_eq!(
            *out.lock().unwrap(),
            [1, 2],
            "the held event first, then the later one"
        );
        assert!(!gate.is_gated());
    });
}

#[test]
fn a_sender_waiting_for_room_is_woken_when_start_takes_the_buffer() {
    use loom::sync::Mutex;
    use std::task::Context;
    loom::model(|| {
        let gate = Arc::new(gate::Gate::<u32>::new(true, 1));
        let out = Arc::new(Mutex::new(Vec::new()));
        send_through(&gate, &out, 1); // fills the buffer
        let starting = {
            let (gate, out) = (gate.clone(), out.clone());
            thread::spawn(move || gate.start(|v| out.lock().unwrap().push(v)))
        };
        let (woken, waker) = woken();
        let full = match gate.admit(2, |v| v, Some(&waker)) {
            gate::Admit::Full(_) => true,
            gate::Admit::Open(v) => {
                out.lock().unwrap().push(v);
                false
            }
            gate::Admit::Held => false,
            gate::Admit::Dropped { .. } => panic!("a waiter is never dropped"),
        };
        starting.join().unwrap();
        if full {
            let wakes = woken.0.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(wakes, 1, "waiting for room, and never told there is some");
        }
    });
}
