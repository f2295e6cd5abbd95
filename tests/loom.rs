//! Loom model of the log slot (`src/slot.rs`), the crate's `unsafe` code.
//!
//! The file includes `src/slot.rs` itself, with loom's `Arc` and atomics in place of std's, and
//! explores every interleaving of a writer and readers (within loom's bounds). Run it with
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
//!   handle, not by the slot.
#![cfg(scopebus_loom)]

mod atomics {
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicPtr, Ordering};
}

#[path = "../src/slot.rs"]
mod slot;

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
