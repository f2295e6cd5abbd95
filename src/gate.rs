//! A gate that holds items while paused and lets them through, in order, when started: the
//! mechanism of a paused bus ([`Pause`](crate::pause::Pause) holds the bus's events in one).
//! Written against `crate::atomics` so that `tests/loom.rs` can model this very file.
//!
//! Invariants:
//! - `gate` is `true` whenever the bus is paused or delivering what it held (written under
//!   `state`'s lock). A send that reads it `false` goes straight to the fan-out; one that reads it
//!   `true` takes the lock and holds its event if the bus is still paused or still delivering.
//!   So, while `start()` delivers the held events, later sends queue up behind them: the held
//!   events reach the subscriptions first, in send order, then the later ones.
//! - Held envelopes are stamped (origin, send time) when sent and numbered when delivered.
//! - The buffer never holds more than `capacity`. A plain send that finds it full drops its
//!   event, counts it (`dropped`) and reports it like a critical drop; `send_wait` waits for
//!   room instead (its waker is kept in `room`, woken when `start()` takes the buffer).
//! - `room` is non-empty only while `gate` is up: a waiter is added only when the buffer is
//!   full (so paused or delivering), and the delivery that empties the buffer takes the
//!   waiters in the same critical section. `start` and `wake_waiters` therefore return at once,
//!   without the lock, when `gate` is down.
//! - Nothing is delivered, dropped or reported with `state`'s lock held: `start()` takes the
//!   buffer out, releases the lock and delivers through the normal fan-out.
//!
//! Lock order: `state` is taken before any other lock of the bus and never while one is held.

use std::collections::VecDeque;
use std::task::Waker;

use crate::atomics::{AtomicBool, Mutex, Ordering};
use crate::sync::lock;

pub(crate) struct Gate<H> {
    gate: AtomicBool,
    state: Mutex<GateState<H>>,
}

struct GateState<H> {
    paused: bool,
    /// `start()` is delivering the buffer (in some thread).
    delivering: bool,
    held: VecDeque<H>,
    capacity: usize,
    /// Items dropped because the buffer was full (or the bus closed before delivering them).
    dropped: u64,
    /// Waiters for room in the buffer (`send_wait`).
    room: Vec<Waker>,
}

/// What [`Gate::admit`] did with an item.
pub(crate) enum Admit<P> {
    /// Not paused: pass it on now.
    Open(P),
    Held,
    /// Full; the waker is registered.
    Full(P),
    /// Full and no waker: counted as dropped; the caller drops it (no lock is held).
    Dropped {
        payload: P,
        capacity: usize,
    },
}

impl<H> Gate<H> {
    pub(crate) fn new(paused: bool, capacity: usize) -> Self {
        Self {
            gate: AtomicBool::new(paused),
            state: Mutex::new(GateState {
                paused,
                delivering: false,
                held: VecDeque::new(),
                capacity,
                dropped: 0,
                room: Vec::new(),
            }),
        }
    }

    /// `true` if an item must go through [`admit`](Self::admit).
    #[inline]
    pub(crate) fn is_gated(&self) -> bool {
        self.gate.load(Ordering::Acquire)
    }

    pub(crate) fn is_paused(&self) -> bool {
        lock(&self.state).paused
    }

    /// Holds `payload` (as `hold(payload)`) if the gate is paused or delivering; otherwise
    /// hands it back, to be passed on now.
    pub(crate) fn admit<P>(
        &self,
        payload: P,
        hold: impl FnOnce(P) -> H,
        wait: Option<&Waker>,
    ) -> Admit<P> {
        let mut state = lock(&self.state);
        if !state.paused && !state.delivering {
            return Admit::Open(payload);
        }
        if state.held.len() < state.capacity {
            state.held.push_back(hold(payload));
            return Admit::Held;
        }
        if let Some(waker) = wait {
            if !state.room.iter().any(|w| w.will_wake(waker)) {
                state.room.push(waker.clone());
            }
            return Admit::Full(payload);
        }
        state.dropped += 1;
        let capacity = state.capacity;
        drop(state);
        Admit::Dropped { payload, capacity }
    }

    pub(crate) fn pause(&self) {
        let mut state = lock(&self.state);
        state.paused = true;
        self.gate.store(true, Ordering::Release);
    }

    /// Delivers the held items in order, then lets items through; idempotent. If another
    /// thread is already delivering, it delivers ours too and this returns at once. A
    /// `pause()` while delivering stops the delivery: what is still held stays held.
    pub(crate) fn start(&self, mut deliver: impl FnMut(H)) {
        if !self.is_gated() {
            // Neither paused nor delivering (the common case, at every scope's exit).
            return;
        }
        let mut state = lock(&self.state);
        if !state.paused {
            return;
        }
        state.paused = false;
        if state.delivering {
            return;
        }
        state.delivering = true;
        loop {
            if state.paused || state.held.is_empty() {
                state.delivering = false;
                self.gate.store(state.paused, Ordering::Release);
                return;
            }
            let batch = std::mem::take(&mut state.held);
            let room = std::mem::take(&mut state.room);
            drop(state);
            for waker in room {
                waker.wake();
            }
            for held in batch {
                deliver(held);
            }
            state = lock(&self.state);
        }
    }

    /// Counts one held item that could not be delivered.
    pub(crate) fn count_dropped(&self) {
        lock(&self.state).dropped += 1;
    }

    /// `(held now, dropped so far)`.
    pub(crate) fn counts(&self) -> (usize, u64) {
        let state = lock(&self.state);
        (state.held.len(), state.dropped)
    }

    /// Wakes the waiters for room (the bus closed: they fail with `Closed`).
    pub(crate) fn wake_waiters(&self) {
        if !self.is_gated() {
            // A waiter for room is kept only while the buffer is full, so the gate is paused
            // or delivering; the delivery that empties the buffer takes the waiters with it.
            return;
        }
        let room = std::mem::take(&mut lock(&self.state).room);
        for waker in room {
            waker.wake();
        }
    }
}
