//! Pausing a bus: sends are held, in order, in a bounded buffer, and delivered on `start()`.
//!
//! The mechanism is [`Gate`] (`gate.rs`, modelled with loom), holding the bus's events; this
//! file stamps what is held (origin and send time, when sent; numbered when delivered) and says
//! what a drop is. See `gate.rs` for the invariants: held events reach the subscriptions first,
//! in send order, then the later sends; the buffer never holds more than its capacity; nothing
//! is delivered, dropped or reported with the gate's lock held.
//!
//! Lock order: the gate's lock is taken before any other lock of the bus and never while one
//! is held.

use std::sync::Arc;
use std::task::Waker;

use crate::bus::Bus;
use crate::delivery::DropReport;
use crate::event::Envelope;
use crate::gate::{Admit, Gate};
use crate::scope::ScopeInfo;
use crate::topic::Payload;

/// The held buffer's capacity unless the scope sets one.
pub(crate) const DEFAULT_HELD_CAPACITY: usize = 1000;

pub(crate) struct Pause {
    gate: Gate<Box<dyn HeldEvent>>,
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
            gate: Gate::new(paused, capacity),
        }
    }

    /// `true` if a send must go through [`hold`](Self::hold).
    #[inline]
    pub(crate) fn is_gated(&self) -> bool {
        self.gate.is_gated()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.gate.is_paused()
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
        let held = |payload: Payload<E>| -> Box<dyn HeldEvent> {
            Box::new(Held(payload.into_envelope(origin)))
        };
        match self.gate.admit(payload, held, wait) {
            Admit::Open(payload) => Hold::Open(payload),
            Admit::Held => Hold::Held,
            Admit::Full(payload) => Hold::Full(payload),
            Admit::Dropped { payload, capacity } => {
                drop(payload); // no lock held: its `Drop` may use the bus
                Hold::Dropped(DropReport {
                    event_type: std::any::type_name::<E>(),
                    subscriber: None,
                    capacity,
                    paused: true,
                })
            }
        }
    }

    pub(crate) fn pause(&self) {
        self.gate.pause();
    }

    /// Delivers the held events in order, then lets sends through; idempotent. If another
    /// task is already delivering, it delivers ours too and this returns at once. A `pause()`
    /// while delivering stops the delivery: what is still held stays held.
    pub(crate) fn start(&self, bus: &Bus) {
        self.gate.start(|held| held.deliver(bus));
    }

    /// Counts one held event that could not be delivered (the bus closed first).
    pub(crate) fn count_dropped(&self) {
        self.gate.count_dropped();
    }

    /// `(held now, dropped so far)`.
    pub(crate) fn counts(&self) -> (usize, u64) {
        self.gate.counts()
    }

    /// Wakes `send_wait`s waiting for room (the bus closed: they fail with `Closed`).
    pub(crate) fn wake_waiters(&self) {
        self.gate.wake_waiters();
    }
}
