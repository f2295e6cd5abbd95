//! [`Sent`]: what a send did with its event.
//!
//! Every send form returns it (`ctx::send`, `try_send`, `send_wait`, `ScopeHandle::send`,
//! `Producer::send`), so the caller can tell an event delivered now from one held by a paused
//! bus, without a second call that could race with `start()`.

use std::fmt;

/// What a send did with its event.
///
/// ```
/// use scopebus::{ctx, Sent};
///
/// struct Reading(f64);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("sensors").paused().run(async {
///     let _log = ctx::subscribe::<Reading>();
///     assert_eq!(ctx::send(Reading(1.5)), Sent::Held); // the bus is paused
///     ctx::start();
///     assert_eq!(ctx::send(Reading(2.5)), Sent::Delivered(1));
///     assert_eq!(ctx::send(Reading(3.5)).delivered(), 1);
/// }).await;
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sent {
    /// Queued now for this many subscriptions. 0 means nobody listens: the event is counted as
    /// undelivered (and published as a dead letter if the bus asks for them).
    Delivered(usize),
    /// The bus is paused: the event waits, in send order, in the bus's held buffer and is
    /// delivered by `start()` to the subscriptions that exist then.
    Held,
    /// The bus is paused and its held buffer is full: the event was dropped, counted
    /// (`BusStats::dropped_held`) and reported to the bus's drop callback. (Not as an
    /// `EventDropped` event: the paused, full bus would drop that too.) Use `send_wait` to wait
    /// for room instead.
    Dropped,
}

impl Sent {
    /// How many subscriptions the event was queued for now (0 when held or dropped).
    pub fn delivered(self) -> usize {
        match self {
            Sent::Delivered(count) => count,
            Sent::Held | Sent::Dropped => 0,
        }
    }

    /// `true` when a paused bus is holding the event for delivery on `start()`.
    pub fn is_held(self) -> bool {
        self == Sent::Held
    }
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sent::Delivered(1) => f.write_str("delivered to 1 subscription"),
            Sent::Delivered(count) => write!(f, "delivered to {count} subscriptions"),
            Sent::Held => f.write_str("held by a paused bus"),
            Sent::Dropped => f.write_str("dropped: the paused bus's held buffer is full"),
        }
    }
}
