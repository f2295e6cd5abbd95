//! Pausing a bus: sends are held, in order, in a bounded buffer, and delivered on `start()`.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::bus::Bus;
use crate::delivery::DropReport;
use crate::event::Envelope;
use crate::scope::ScopeInfo;
use crate::sync::lock;
use crate::topic::Payload;

/// The held buffer's capacity unless the scope sets one.
pub(crate) const DEFAULT_HELD_CAPACITY: usize = 1000;

pub(crate) struct Pause {
    gate: AtomicBool,
    state: Mutex<PauseState>,
}

struct PauseState {
    paused: bool,
    /// `start()` is delivering the buffer (in some task).
    delivering: bool,
    held: VecDeque<Box<dyn HeldEvent>>,
    capacity: usize,
    /// Events dropped because the buffer was full (or the bus closed before delivering them).
    dropped: u64,
    /// `send_wait`s waiting for room in the buffer.
    room: Vec<Waker>,
}

/// One held event: delivers itself through its type's fan-out.
pub(crate) trait HeldEvent: Send {
    fn deliver(self: Box<Self>, bus: &Bus);
}

struct Held<E>(Envelope<E>);

impl<E: Send + Sync + 'static> HeldEvent for Held<E> {
    fn deliver(self: Box<Self>, bus: &Bus) {
        bus.deliver_held(self.0);
    }
}

/// What [`Pause::hold`] did with an event.
pub(crate) enum Hold<E> {
    /// Not paused: send it now.
    Open(E),
    Held,
    /// Full; the waker is registered (`send_wait` only).
    Full(E),
    /// Full: dropped; report it (no lock is held any more).
    Dropped(DropReport),
}

impl Pause {
    pub(crate) fn new(paused: bool, capacity: usize) -> Self {
        Self {
            gate: AtomicBool::new(paused),
            state: Mutex::new(PauseState {
                paused,
                delivering: false,
                held: VecDeque::new(),
                capacity,
                dropped: 0,
                room: Vec::new(),
            }),
        }
    }

    /// `true` if a send must go through [`hold`](Self::hold).
    #[inline]
    pub(crate) fn is_gated(&self) -> bool {
        self.gate.load(Ordering::Acquire)
    }

    pub(crate) fn is_paused(&self) -> bool {
        lock(&self.state).paused
    }

    /// Holds `event` if the bus is paused or delivering (see the module invariants).
    /// `payload` is a new event (stamped now if held) or an envelope stamped elsewhere (an
    /// imported event); `Open` and `Full` hand it back as it came.
    pub(crate) fn hold<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        payload: Payload<E>,
        wait: Option<&Waker>,
    ) -> Hold<Payload<E>> {
        let mut state = lock(&self.state);
        if !state.paused && !state.delivering {
            return Hold::Open(payload);
        }
        if state.held.len() < state.capacity {
            state
                .held
                .push_back(Box::new(Held(payload.into_envelope(origin))));
            return Hold::Held;
        }
        if let Some(waker) = wait {
            if !state.room.iter().any(|w| w.will_wake(waker)) {
                state.room.push(waker.clone());
            }
            return Hold::Full(payload);
        }
        state.dropped += 1;
        let report = DropReport {
            event_type: std::any::type_name::<E>(),
            subscriber: None,
            capacity: state.capacity,
            paused: true,
        };
        drop(state);
        drop(payload); // no lock held: its `Drop` may use the bus
        Hold::Dropped(report)
    }

    pub(crate) fn pause(&self) {
        let mut state = lock(&self.state);
        state.paused = true;
        self.gate.store(true, Ordering::Release);
    }

    /// Delivers the held events in order, then lets sends through; idempotent. If another
    /// task is already delivering, it delivers ours too and this returns at once. A `pause()`
    /// while delivering stops the delivery: what is still held stays held.
    pub(crate) fn start(&self, bus: &Bus) {
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
                held.deliver(bus);
            }
            state = lock(&self.state);
        }
    }

    /// Counts one held event that could not be delivered (the bus closed first).
    pub(crate) fn count_dropped(&self) {
        lock(&self.state).dropped += 1;
    }

    /// `(held now, dropped so far)`.
    pub(crate) fn counts(&self) -> (usize, u64) {
        let state = lock(&self.state);
        (state.held.len(), state.dropped)
    }

    /// Wakes `send_wait`s waiting for room (the bus closed: they fail with `Closed`).
    pub(crate) fn wake_waiters(&self) {
        if !self.is_gated() {
            // A waiter for room is kept only while the buffer is full, so the bus is paused or
            // delivering; the delivery that empties the buffer takes the waiters with it.
            return;
        }
        let room = std::mem::take(&mut lock(&self.state).room);
        for waker in room {
            waker.wake();
        }
    }
}
