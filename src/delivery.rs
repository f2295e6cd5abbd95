//! Delivery control: per-subscription policies ([`SubscriptionBuilder`]), drop reports and the
//! bookkeeping a send does when a bounded subscription is full.
//!
//! Invariants:
//! - A policy is fixed when the subscription is made; the default is unbounded and lossless.
//! - Every event a subscription loses is counted exactly once: as a *drop* (bounded, full) —
//!   critical or lossy — or as *superseded* (keep-latest). Drops of critical subscriptions are
//!   reported to the bus's drop callback; lossy drops and superseded events are not.
//! - Nothing collected in a [`DropLog`] is acted on while a lock is held: the callback runs, and
//!   evicted envelopes are dropped, only after the sender has released every lock.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::bus::{Bus, TopicOf};
use crate::context;
use crate::error::{SubscribeError, expect_scope};
use crate::event::AnyEnvelope;
use crate::subscription::{AnySubscription, Subscription};

/// What a bounded subscription does with a new event when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overflow {
    /// Keep what is queued; the new event is lost for this subscription (not counted by `send`).
    DropNewest,
    /// Make room by dropping the oldest queued event; the new one is queued.
    DropOldest,
    /// Lose nothing: [`ctx::send_wait`](crate::ctx::send_wait) waits until there is room.
    /// A plain, non-blocking [`ctx::send`](crate::ctx::send) cannot wait: when it finds the
    /// subscription full it drops the new event as [`DropNewest`](Overflow::DropNewest) does, and
    /// that drop is counted and reported like any other critical drop.
    Wait,
}

/// A subscription's delivery policy.
#[derive(Clone)]
pub(crate) struct Policy {
    /// `usize::MAX` for unbounded.
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    /// Keep-latest: capacity 1, the newest replaces the pending one (counted as superseded).
    pub(crate) coalesce: bool,
    pub(crate) lossy: bool,
    pub(crate) name: Option<Arc<str>>,
    /// Receive the type's retained events first.
    pub(crate) replay: bool,
    /// A tap: sees every type, but is no demand for any (see `producer.rs`).
    pub(crate) tap: bool,
    /// Cancel the consuming task when the producer ends abnormally.
    pub(crate) linked: bool,
}

impl Policy {
    pub(crate) const UNBOUNDED: usize = usize::MAX;

    pub(crate) fn lossless() -> Self {
        Self {
            capacity: Self::UNBOUNDED,
            overflow: Overflow::DropNewest,
            coalesce: false,
            lossy: false,
            name: None,
            replay: false,
            tap: false,
            linked: false,
        }
    }

    pub(crate) fn is_unbounded(&self) -> bool {
        self.capacity == Self::UNBOUNDED
    }
}

/// The delivery options both builders offer (one definition, two builders).
macro_rules! policy_methods {
    () => {
        /// Holds at most `capacity` unread events; `overflow` says which event is lost when full.
        ///
        /// # Panics
        ///
        /// If `capacity` is 0 (a subscription that can hold nothing would lose everything).
        #[track_caller]
        pub fn bounded(mut self, capacity: usize, overflow: Overflow) -> Self {
            assert!(
                capacity > 0,
                "`bounded` needs a capacity of at least 1; to receive nothing, do not subscribe"
            );
            self.policy.capacity = capacity;
            self.policy.overflow = overflow;
            self.policy.coalesce = false;
            self
        }

        /// Keeps only the newest unread event (coalescing), for state updates where only the latest
        /// matters. Replaced events are counted as superseded, not as drops: they raise no alarm.
        pub fn keep_latest(mut self) -> Self {
            self.policy.capacity = 1;
            self.policy.overflow = Overflow::DropOldest;
            self.policy.coalesce = true;
            self
        }

        /// Marks an observability subscriber (a log, a dashboard): its drops are counted as lossy,
        /// separately from critical ones, and never reach the drop callback.
        pub fn lossy(mut self) -> Self {
            self.policy.lossy = true;
            self
        }

        /// Receives the events the bus retains for this type (see
        /// [`ctx::retain`](crate::ctx::retain)) first, oldest first, then live events — with no gap
        /// and no duplicate between the two, even while other tasks are sending.
        pub fn replay(mut self) -> Self {
            self.policy.replay = true;
            self
        }

        /// Links the subscription to the task that consumes it (Ergo's *link*, as opposed to the
        /// default *monitor*): if the event type's producer ends abnormally (its owner scope
        /// failed or was cancelled, see [`EndReason::is_abnormal`](crate::EndReason::is_abnormal)),
        /// the subscription first yields what it holds and then, instead of ending, cancels the
        /// [`ctx::spawn`](crate::ctx::spawn) task that polls it. A normal end (unregistered, owner
        /// finished, bus closed) ends the stream as usual. Polled outside a `ctx::spawn` task,
        /// a linked subscription ends with its reason like any other.
        pub fn linked(mut self) -> Self {
            self.policy.linked = true;
            self
        }

        /// Names the subscriber in drop reports and diagnostics.
        pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
            self.policy.name = Some(name.into());
            self
        }
    };
}

/// Options for a subscription, made by [`ctx::subscription`](crate::ctx::subscription).
///
/// The default — what [`ctx::subscribe`](crate::ctx::subscribe) gives — is unbounded and
/// lossless. Every option here trades that for bounded memory, and every event lost that way is
/// counted and visible (see [`Subscription::missed`] and [`Subscription::dropped`]).
///
/// ```
/// use scopebus::{ctx, Overflow};
///
/// struct Reading(f64);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let mut dashboard = ctx::subscription::<Reading>()
///         .name("dashboard")
///         .bounded(2, Overflow::DropOldest)
///         .lossy()
///         .subscribe();
///     for i in 0..5 {
///         ctx::send(Reading(i as f64));
///     }
///     let kept: Vec<f64> = dashboard.drain().iter().map(|r| r.0).collect();
///     assert_eq!(kept, [3.0, 4.0]);
///     assert_eq!(dashboard.dropped(), 3);
/// }).await;
/// # }
/// ```
#[must_use = "a subscription builder does nothing until `subscribe` is called"]
pub struct SubscriptionBuilder<E> {
    policy: Policy,
    _event: PhantomData<fn() -> E>,
}

impl<E: Send + Sync + 'static> SubscriptionBuilder<E> {
    pub(crate) fn new() -> Self {
        Self {
            policy: Policy::lossless(),
            _event: PhantomData,
        }
    }

    policy_methods!();

    /// Subscribes on the current scope's bus with these options; see
    /// [`ctx::subscribe`](crate::ctx::subscribe).
    ///
    /// # Panics
    ///
    /// Outside of a scope. Use [`try_subscribe`](Self::try_subscribe) to get an error instead.
    #[track_caller]
    pub fn subscribe(self) -> Subscription<E> {
        expect_scope("subscription(..).subscribe", self.try_subscribe().ok())
    }

    /// Subscribes like [`subscribe`](Self::subscribe), or returns an error outside of a scope.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::NoScope`] outside of a scope.
    pub fn try_subscribe(self) -> Result<Subscription<E>, SubscribeError> {
        let policy = self.policy;
        context::with(move |frame| frame.subscribe_with::<E>(policy)).ok_or(SubscribeError::NoScope)
    }

    /// Subscribes on the bus of the scope behind `handle`, owned by that scope.
    pub fn subscribe_on(self, handle: &crate::ScopeHandle) -> Subscription<E> {
        handle.subscribe_with(self.policy)
    }
}

impl<E> fmt::Debug for SubscriptionBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("event", &std::any::type_name::<E>())
            .field("capacity", &self.policy.capacity)
            .field("overflow", &self.policy.overflow)
            .field("keep_latest", &self.policy.coalesce)
            .field("lossy", &self.policy.lossy)
            .field("name", &self.policy.name)
            .field("replay", &self.policy.replay)
            .finish()
    }
}

/// Options for a multi-type subscription ([`ctx::subscribe_many`](crate::ctx::subscribe_many))
/// or a tap ([`ctx::tap`](crate::ctx::tap)). The delivery options are those of
/// [`SubscriptionBuilder`]; a tap used for logging is typically `bounded(..).lossy()`.
#[must_use = "a subscription builder does nothing until `subscribe` is called"]
pub struct ManyBuilder {
    policy: Policy,
    /// The types to receive; `None` for a tap (every type).
    types: Option<Vec<TopicOf>>,
}

impl ManyBuilder {
    pub(crate) fn new(tap: bool) -> Self {
        let mut policy = Policy::lossless();
        policy.tap = tap;
        Self {
            policy,
            types: (!tap).then(Vec::new),
        }
    }

    /// Adds the event type `E` to the subscription (ignored by a tap, which has every type).
    pub fn with<E: Send + Sync + 'static>(mut self) -> Self {
        if let Some(types) = &mut self.types {
            types.push(Bus::topic_dyn::<E>);
        }
        self
    }

    policy_methods!();

    /// Subscribes on the current scope's bus, owned by the current scope.
    ///
    /// # Panics
    ///
    /// Outside of a scope. Use [`try_subscribe`](Self::try_subscribe) to get an error instead.
    #[track_caller]
    pub fn subscribe(self) -> AnySubscription {
        expect_scope(
            "subscribe_many/tap(..).subscribe",
            self.try_subscribe().ok(),
        )
    }

    /// Subscribes like [`subscribe`](Self::subscribe), or returns an error outside of a scope.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::NoScope`] outside of a scope.
    pub fn try_subscribe(self) -> Result<AnySubscription, SubscribeError> {
        context::with(move |frame| frame.subscribe_many(self.types.as_deref(), self.policy))
            .ok_or(SubscribeError::NoScope)
    }
}

impl fmt::Debug for ManyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManyBuilder")
            .field("tap", &self.types.is_none())
            .field("types", &self.types.as_ref().map(Vec::len))
            .field("capacity", &self.policy.capacity)
            .field("lossy", &self.policy.lossy)
            .field("name", &self.policy.name)
            .finish()
    }
}

/// One event lost by one critical subscription, as given to a bus's drop callback
/// ([`Scope::on_drop`](crate::Scope::on_drop)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropReport {
    /// `std::any::type_name` of the event type (for diagnostics only).
    pub event_type: &'static str,
    /// The subscriber's name, if it was given one.
    pub subscriber: Option<Arc<str>>,
    /// The subscription's capacity, or the held buffer's when `paused`.
    pub capacity: usize,
    /// `true` when the event was dropped by a paused bus whose held buffer was full (then
    /// `subscriber` is `None`: the event reached no subscription).
    pub paused: bool,
}

/// The drop callback of a bus.
pub(crate) type DropCallback = Arc<dyn Fn(&DropReport) + Send + Sync>;

/// What one send lost, collected under locks and acted on after they are released.
pub(crate) struct DropLog {
    event_type: &'static str,
    pub(crate) critical: u64,
    pub(crate) lossy: u64,
    pub(crate) superseded: u64,
    /// Reports and evicted envelopes. Nothing here allocates until it is needed: a send that
    /// loses nothing creates and drops an empty log (a few stores), and the first evicted
    /// envelopes are kept inline, since a fan-out to keep-latest or drop-oldest subscriptions
    /// evicts one per subscription on every send.
    lost: Lost,
}

/// How many evicted envelopes a [`DropLog`] keeps without allocating.
const INLINE_EVICTED: usize = 4;

/// What a [`DropLog`] hands over once the locks are released.
pub(crate) struct Lost {
    /// One report per critical drop.
    reports: Vec<DropReport>,
    /// Envelopes pushed out of full queues; dropped after the locks (a payload's `Drop` may
    /// use the bus). `evicted[..inline]`, then `more`.
    evicted: [Option<AnyEnvelope>; INLINE_EVICTED],
    inline: usize,
    more: Vec<AnyEnvelope>,
}

impl Lost {
    #[inline]
    fn is_empty(&self) -> bool {
        self.reports.is_empty() && self.inline == 0
    }

    /// Drops the evicted envelopes (no lock may be held: a payload's `Drop` may use the bus)
    /// and hands back the reports.
    pub(crate) fn into_reports(self) -> Vec<DropReport> {
        let Lost {
            reports,
            evicted,
            more,
            ..
        } = self;
        drop((evicted, more));
        reports
    }
}

impl DropLog {
    pub(crate) fn new(event_type: &'static str) -> Self {
        Self {
            event_type,
            critical: 0,
            lossy: 0,
            superseded: 0,
            lost: Lost {
                reports: Vec::new(),
                evicted: [const { None }; INLINE_EVICTED],
                inline: 0,
                more: Vec::new(),
            },
        }
    }

    /// Keeps an envelope pushed out of a full queue, to be dropped after the locks.
    pub(crate) fn evicted(&mut self, envelope: AnyEnvelope) {
        let lost = &mut self.lost;
        match lost.evicted.get_mut(lost.inline) {
            Some(slot) => {
                *slot = Some(envelope);
                lost.inline += 1;
            }
            None => lost.more.push(envelope),
        }
    }

    /// Whether the send lost anything to report or drop (checked before moving the log).
    #[inline]
    pub(crate) fn has_loss(&self) -> bool {
        !self.lost.is_empty()
    }

    /// What to report and drop once the locks are released.
    pub(crate) fn into_lost(self) -> Lost {
        self.lost
    }

    /// Records one event lost by a subscription with `policy`.
    pub(crate) fn lost(&mut self, policy: &Policy) {
        if policy.coalesce {
            self.superseded += 1;
        } else if policy.lossy {
            self.lossy += 1;
        } else {
            self.critical += 1;
            let event_type = self.event_type;
            self.lost.reports.push(DropReport {
                event_type,
                subscriber: policy.name.clone(),
                capacity: policy.capacity,
                paused: false,
            });
        }
    }
}
