//! Statistics snapshots: [`BusStats`] and [`TypeStats`].
//!
//! Counters live where the send already is: under the topic lock for sends that reach the
//! fan-out (no extra atomic on the hot path), in one relaxed atomic per topic for sends that find
//! no subscriber, and in one per bus for types that never had a subscriber (those have no topic,
//! so that a send nobody listens to allocates nothing). A snapshot takes each topic's lock once;
//! counters of different types are not read at one instant.

use std::any::TypeId;

/// Counters of one event type on one bus, since the type's first subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypeStats {
    /// The event type.
    pub type_id: TypeId,
    /// `std::any::type_name` of the event type (for diagnostics only).
    pub type_name: &'static str,
    /// Live subscriptions now.
    pub subscriptions: usize,
    /// Events sent.
    pub sent: u64,
    /// Deliveries: one per event per subscription that accepted it.
    pub delivered: u64,
    /// Events lost by critical (not lossy) bounded subscriptions: one per event per subscription.
    pub dropped_critical: u64,
    /// Events lost by lossy subscriptions: one per event per subscription.
    pub dropped_lossy: u64,
    /// Events replaced by a newer one in keep-latest subscriptions.
    pub superseded: u64,
    /// Sends that reached no subscription.
    pub undelivered: u64,
    /// Events kept for replay now.
    pub retained: usize,
}

/// A snapshot of one bus: totals and one [`TypeStats`] per event type that has had a
/// subscription. Obtained with [`ctx::stats`](crate::ctx::stats) or
/// [`ScopeHandle::stats`](crate::ScopeHandle::stats).
///
/// ```
/// use scopebus::ctx;
///
/// struct Ping;
/// struct Nobody;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let _sub = ctx::subscribe::<Ping>();
///     ctx::send(Ping);
///     ctx::send(Nobody);
///     let stats = ctx::stats();
///     let ping = stats.of::<Ping>().unwrap();
///     assert_eq!((ping.sent, ping.delivered, ping.subscriptions), (1, 1, 1));
///     assert_eq!(stats.sent, 2);
///     assert_eq!(stats.undelivered, 1); // the `Nobody` that nobody heard
/// }).await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BusStats {
    /// Per event type, for types that have had a subscription, sorted by type name.
    pub types: Vec<TypeStats>,
    /// Events sent, all types.
    pub sent: u64,
    /// Deliveries, all types.
    pub delivered: u64,
    /// Critical drops, all types.
    pub dropped_critical: u64,
    /// Lossy drops, all types.
    pub dropped_lossy: u64,
    /// Superseded events (keep-latest), all types.
    pub superseded: u64,
    /// Sends that reached no subscription, all types (including types that never had one).
    pub undelivered: u64,
    /// Events a paused bus holds now, waiting for `start()`. They count as sent (above) only
    /// once they are delivered.
    pub held: usize,
    /// Events a paused bus dropped because its held buffer was full (each also reported to the
    /// drop callback), or could not deliver because the bus closed first.
    pub dropped_held: u64,
}

impl BusStats {
    /// The counters of event type `E`, if it has had a subscription on this bus.
    pub fn of<E: 'static>(&self) -> Option<&TypeStats> {
        self.types.iter().find(|t| t.type_id == TypeId::of::<E>())
    }

    pub(crate) fn new(
        mut types: Vec<TypeStats>,
        unrouted: u64,
        held: usize,
        dropped_held: u64,
    ) -> Self {
        types.sort_by_key(|t| t.type_name);
        let mut stats = Self {
            sent: unrouted,
            undelivered: unrouted,
            held,
            dropped_held,
            ..Self::default()
        };
        for t in &types {
            stats.sent += t.sent;
            stats.delivered += t.delivered;
            stats.dropped_critical += t.dropped_critical;
            stats.dropped_lossy += t.dropped_lossy;
            stats.superseded += t.superseded;
            stats.undelivered += t.undelivered;
        }
        stats.types = types;
        stats
    }
}
