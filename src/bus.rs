//! [`Bus`]: the event bus owned by a root or isolated scope, routing by exact `TypeId`.
//!
//! Invariants:
//! - One [`Topic`] per event type, created on first subscription and kept for the bus's life
//!   (memory grows with the number of types used, not with traffic).
//! - A send for a type that has no topic, or whose topic has no subscriber, allocates nothing
//!   and takes no lock. The type's topic is found without a lock (`table.rs`).
//! - `closed` goes from `false` to `true` once, when the owning scope finishes its body; from then
//!   on sends fail with `Closed` and subscriptions are created already ended.
//! - Sequence numbers are drawn from one counter per bus, inside the topic lock (see `topic.rs`).
//! - The drop callback is called, and undelivered or evicted payloads are dropped, only after
//!   every lock of the send has been released.
//!
//! - While paused (`pause.rs`), sends are held before they reach any topic; ownership is
//!   checked first, so a held event is one its sender was allowed to send.
//!
//! Lock order: pause state → table writer → `taps` → topic → `order` → queue. The table's
//! writer lock is only taken to insert a new topic, to add a tap and to close the bus, never
//! while a topic lock is held; sends never take it.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};

use crate::delivery::{DropCallback, DropReport, Lost, Policy};
use crate::error::{SendError, SendErrorKind};
use crate::event::{AnyEnvelope, Envelope};
use crate::pause::{DEFAULT_HELD_CAPACITY, Hold, Pause};
use crate::scope::ScopeInfo;
use crate::sent::Sent;
use crate::stats::BusStats;
use crate::subscription::{EndReason, Queue};
use crate::sync::lock;
use crate::system::{DeadLetter, EventDropped};
use crate::table::TopicTable;
use crate::topic::{AnyTopic, Full, Payload, Sender, Topic};

/// Gets (creating if needed) the topic of one event type, type-erased.
pub(crate) type TopicOf = fn(&Bus) -> Arc<dyn AnyTopic>;

/// How a scope configures the bus it owns.
pub(crate) struct BusConfig {
    pub(crate) on_drop: Option<DropCallback>,
    /// Publish a `DeadLetter` for every event that reaches no subscription.
    pub(crate) dead_letters: bool,
    /// Start paused.
    pub(crate) paused: bool,
    pub(crate) held_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            on_drop: None,
            dead_letters: false,
            paused: false,
            held_capacity: DEFAULT_HELD_CAPACITY,
        }
    }
}

impl BusConfig {
    /// `true` when nothing differs from the default (what a scope sharing a bus requires).
    pub(crate) fn is_default(&self) -> bool {
        self.on_drop.is_none()
            && !self.dead_letters
            && !self.paused
            && self.held_capacity == DEFAULT_HELD_CAPACITY
    }
}

thread_local! {
    /// Set while this thread runs a drop callback (see [`Bus::report`]).
    static IN_DROP_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

pub(crate) struct Bus {
    topics: TopicTable,
    on_drop: Option<DropCallback>,
    /// Publish a `DeadLetter` for every event that reaches no subscription.
    dead_letters: bool,
    /// Sends of types that never had a subscriber (they have no topic).
    unrouted: AtomicU64,
    /// Taken by the fan-out of types that have multi-type subscribers or taps (see `topic.rs`).
    order: Mutex<()>,
    /// Taps: attached to every topic, including topics created later. Written under the
    /// table's writer lock, so a new topic and a new tap always meet.
    taps: Mutex<Vec<Weak<Queue<AnyEnvelope>>>>,
    has_taps: AtomicBool,
    seq: AtomicU64,
    next_subscription: AtomicU64,
    closed: AtomicBool,
    /// Pause / start (see `pause.rs`).
    pause: Pause,
}

impl Bus {
    pub(crate) fn new(config: BusConfig) -> Self {
        let BusConfig {
            on_drop,
            dead_letters,
            paused,
            held_capacity,
        } = config;
        Self {
            topics: TopicTable::new(),
            on_drop,
            dead_letters,
            unrouted: AtomicU64::new(0),
            order: Mutex::new(()),
            taps: Mutex::new(Vec::new()),
            has_taps: AtomicBool::new(false),
            seq: AtomicU64::new(1),
            next_subscription: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            pause: Pause::new(paused, held_capacity),
        }
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Publishes `event` to every subscription of `E` on this bus.
    pub(crate) fn send<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
    ) -> Result<Sent, SendError<E>> {
        self.send_as(origin, event, Sender::Anyone, None)
    }

    /// Publishes `event` like [`send`](Self::send), but drops it if it is refused: for
    /// `ctx::send`, which reports the refusal without handing the event back.
    ///
    /// The common case — an open bus, not paused, no taps, no dead letters — goes straight to
    /// the type's topic; anything else takes the general path of [`send`](Self::send).
    #[inline]
    pub(crate) fn send_or_drop<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
    ) -> Result<Sent, SendErrorKind> {
        if self.is_closed()
            || self.pause.is_gated()
            || self.dead_letters
            || self.has_taps.load(Ordering::Acquire)
        {
            return self.send(origin, event).map_err(|error| error.kind());
        }
        let Some(topic) = self.topics.get(TypeId::of::<E>()) else {
            // `E` never had a subscriber: nothing to allocate, no owner, no lock taken.
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            return Ok(Sent::Delivered(0));
        };
        let topic = downcast::<E>(topic.as_ref());
        match self.fan_out(topic, origin, Payload::Event(event), Sender::Anyone, None) {
            Ok(accepted) => Ok(Sent::Delivered(accepted)),
            Err(Full::Refused(error)) => Err(error.kind()),
            Err(Full::Wait(_)) => unreachable!("only `send_wait` waits for room"),
        }
    }

    /// Publishes a system event (`system.rs`) on behalf of the library. While the bus is paused,
    /// it is held only if its type has a topic (someone subscribed to it or taps the bus):
    /// otherwise it could only be undelivered, and holding it would take room from the user's
    /// events.
    pub(crate) fn publish<E: Send + Sync + 'static>(&self, origin: &Arc<ScopeInfo>, event: E) {
        let _ = self.send_as(origin, event, Sender::Library, None);
    }

    /// [`publish`](Self::publish), building the event only if someone could receive it: a
    /// system event nobody subscribed to (the common case, sent on every scope start and stop)
    /// is counted as sent and undelivered, and never allocated.
    /// `make` gives the origin with the event: a scope's identity is itself made on first use
    /// (`Frame::info`), so a lifecycle event nobody hears does not make it.
    pub(crate) fn publish_with<'a, E: Send + Sync + 'static>(
        &self,
        make: impl FnOnce() -> (&'a Arc<ScopeInfo>, E),
    ) {
        let unheard = !self.dead_letters
            && !self.is_closed()
            && !self.has_taps.load(Ordering::Acquire)
            && self.topics.get(TypeId::of::<E>()).is_none();
        if unheard {
            // What `send_inner` would do with no topic, minus building the event.
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (origin, event) = make();
        self.publish(origin, event);
    }

    /// Publishes `event` as `sender`; `topic` is the type's topic when the caller has it (a
    /// producer), saving the map lookup.
    pub(crate) fn send_as<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> Result<Sent, SendError<E>> {
        match self.send_inner(origin, event, None, sender, topic) {
            Ok(sent) => Ok(sent),
            Err(Full::Refused(error)) => Err(error),
            Err(Full::Wait(_)) => unreachable!("only `send_wait` waits for room"),
        }
    }

    /// One attempt of `send_wait`: sends if every `Wait` subscription (and a paused bus's held
    /// buffer) has room, otherwise registers `waker` and hands the event back.
    pub(crate) fn try_send_with_room<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
        waker: &Waker,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> Result<Sent, Full<E>> {
        self.send_inner(origin, event, Some(waker), sender, topic)
    }

    fn send_inner<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
        wait: Option<&Waker>,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> Result<Sent, Full<E>> {
        if self.is_closed() {
            return Err(Full::Refused(SendError::new(SendErrorKind::Closed, event)));
        }
        let event = if self.pause.is_gated() && self.holds(sender, topic) {
            match self.hold(origin, Payload::Event(event), wait, sender, topic) {
                Ok(done) => return done,
                Err(open) => open.into_event(),
            }
        } else {
            event
        };
        // Looked up once: `route` gets the topic it found.
        let found = match topic {
            Some(topic) => Some(&**topic),
            None => self
                .topics
                .get(TypeId::of::<E>())
                .map(|t| downcast::<E>(t.as_ref())),
        };
        if found.is_none() && !self.has_taps.load(Ordering::Acquire) {
            // `E` has no topic: nothing to allocate, no owner, no lock taken.
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            drop(event);
            if self.dead_letters && TypeId::of::<E>() != TypeId::of::<DeadLetter>() {
                self.dead_letter::<E>(origin);
            }
            return Ok(Sent::Delivered(0));
        }
        self.route(origin, Payload::Event(event), wait, sender, found)
            .map(Sent::Delivered)
    }

    /// The paused path of a send: holds the event, or hands it back (`Err`) if the bus was
    /// started meanwhile.
    #[cold]
    #[inline(never)]
    fn hold<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        payload: Payload<E>,
        wait: Option<&Waker>,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> Result<Result<Sent, Full<E>>, Payload<E>> {
        if let Some(kind) = self.refuses(sender, topic) {
            return Ok(Err(Full::Refused(SendError::new(
                kind,
                payload.into_event(),
            ))));
        }
        Ok(match self.pause.hold(origin, payload, wait) {
            Hold::Open(payload) => return Err(payload),
            Hold::Held => Ok(Sent::Held),
            Hold::Full(payload) => Err(Full::Wait(payload.into_event())),
            Hold::Dropped(report) => {
                // Not published as `EventDropped`: on a paused bus with a full buffer, it could
                // only be dropped too.
                self.report(report, origin, false);
                Ok(Sent::Dropped)
            }
        })
    }

    /// Whether a paused bus holds this send (see [`publish`](Self::publish)).
    fn holds<E: Send + Sync + 'static>(
        &self,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> bool {
        if !matches!(sender, Sender::Library) || topic.is_some() {
            return true;
        }
        self.topics.get(TypeId::of::<E>()).is_some()
    }

    /// Why `sender` may not send `E` now (checked before a paused bus holds the event).
    fn refuses<E: Send + Sync + 'static>(
        &self,
        sender: Sender,
        topic: Option<&Arc<Topic<E>>>,
    ) -> Option<SendErrorKind> {
        if let Some(topic) = topic {
            return topic.refuses(sender);
        }
        let topic = self.topics.get(TypeId::of::<E>())?; // no topic, so no owner
        downcast::<E>(topic.as_ref()).refuses(sender)
    }

    /// Publishes an envelope stamped elsewhere, as a plain send from anyone: the NATS bridge's
    /// imported events keep their remote origin and send time. A paused bus holds it as it is.
    #[cfg(feature = "nats")]
    pub(crate) fn send_stamped<E: Send + Sync + 'static>(
        &self,
        envelope: Envelope<E>,
    ) -> Result<Sent, SendErrorKind> {
        if self.is_closed() {
            return Err(SendErrorKind::Closed);
        }
        let origin = envelope.origin_arc();
        let mut payload = Payload::Held(envelope);
        if self.pause.is_gated() {
            // The same held path as any send (no waker: a full buffer drops).
            match self.hold(&origin, payload, None, Sender::Anyone, None) {
                Ok(done) => return done.map_err(Full::kind),
                Err(open) => payload = open,
            }
        }
        self.route(&origin, payload, None, Sender::Anyone, None)
            .map(Sent::Delivered)
            .map_err(Full::kind)
    }

    /// Delivers an envelope a paused bus held (from `start()`).
    pub(crate) fn deliver_held<E: Send + Sync + 'static>(&self, envelope: Envelope<E>) {
        let origin = envelope.origin_arc();
        let payload = Payload::Held(envelope);
        if let Err(Full::Refused(error)) = self.route(&origin, payload, None, Sender::Held, None) {
            // The bus closed before the event could be delivered: lost, so counted and reported.
            self.pause.count_dropped();
            let report = DropReport {
                event_type: std::any::type_name::<E>(),
                subscriber: None,
                capacity: 0,
                paused: true,
            };
            drop(error);
            self.report(report, &origin, false);
        }
    }

    /// The fan-out of one send (no pause): to `topic` when the caller found it, otherwise to
    /// the type's topic if any (created first if a tap must see the type).
    fn route<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        payload: Payload<E>,
        wait: Option<&Waker>,
        sender: Sender,
        topic: Option<&Topic<E>>,
    ) -> Result<usize, Full<E>> {
        let found = match topic {
            Some(topic) => Some(topic),
            None => {
                if self.has_taps.load(Ordering::Acquire) {
                    // A tap sees every type: make sure this one has a topic (someone listens).
                    drop(self.topic::<E>());
                }
                self.topics
                    .get(TypeId::of::<E>())
                    .map(|topic| downcast::<E>(topic.as_ref()))
            }
        };
        let result = match found {
            Some(topic) => self.fan_out(topic, origin, payload, sender, wait),
            None => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
                drop(payload);
                Ok(0)
            }
        };
        let system = TypeId::of::<E>();
        if self.dead_letters && matches!(result, Ok(0)) && system != TypeId::of::<DeadLetter>() {
            self.dead_letter::<E>(origin);
        }
        result
    }

    /// Sends through `topic` with this bus's sequence and order; what the send lost is
    /// accounted for once the topic has released its lock (the drop callback and the
    /// `EventDropped` it publishes may use this bus).
    #[inline]
    fn fan_out<E: Send + Sync + 'static>(
        &self,
        topic: &Topic<E>,
        origin: &Arc<ScopeInfo>,
        payload: Payload<E>,
        sender: Sender,
        wait: Option<&Waker>,
    ) -> Result<usize, Full<E>> {
        let on_loss = |lost| {
            let publish = TypeId::of::<E>() != TypeId::of::<EventDropped>();
            self.account(lost, origin, publish);
        };
        let next_seq = || self.seq.fetch_add(1, Ordering::Relaxed);
        topic.send(
            next_seq,
            origin,
            payload,
            sender,
            wait,
            &self.order,
            on_loss,
        )
    }

    fn dead_letter<E: 'static>(&self, origin: &Arc<ScopeInfo>) {
        self.publish(
            origin,
            DeadLetter {
                event_type: std::any::type_name::<E>(),
                origin: origin.clone(),
            },
        );
    }

    /// Reports critical drops to the callback and as `EventDropped` events, and drops evicted
    /// envelopes (no lock held).
    fn account(&self, lost: Lost, origin: &Arc<ScopeInfo>, publish: bool) {
        for report in lost.into_reports() {
            self.report(report, origin, publish);
        }
    }

    /// Gives one drop report to the callback, and publishes it as `EventDropped` if `publish`.
    ///
    /// A drop caused by the callback itself (its own send hitting a full queue) is counted and
    /// published, but not given to the callback again on the same thread: that would recurse
    /// without end (found by `tests/misuse.rs`, a stack overflow).
    fn report(&self, report: DropReport, origin: &Arc<ScopeInfo>, publish: bool) {
        if let Some(callback) = &self.on_drop
            && !IN_DROP_CALLBACK.with(Cell::get)
        {
            IN_DROP_CALLBACK.with(|inside| inside.set(true));
            let _reset =
                scopeguard::guard((), |()| IN_DROP_CALLBACK.with(|inside| inside.set(false)));
            callback(&report);
        }
        if publish {
            self.publish(origin, EventDropped { report });
        }
    }

    /// Holds later sends until [`start`](Self::start).
    pub(crate) fn pause(&self) {
        self.pause.pause();
    }

    /// Delivers what a pause held, in order, then lets sends through (see `pause.rs`).
    pub(crate) fn start(&self) {
        self.pause.start(self);
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Keeps the last `count` events of `E` for replay (0: stop keeping).
    pub(crate) fn retain<E: Send + Sync + 'static>(&self, count: usize) {
        let evicted = self.topic::<E>().set_retention(count);
        drop(evicted); // no lock held
    }

    /// A snapshot of the bus's counters.
    pub(crate) fn stats(&self) -> BusStats {
        let topics = self.topics.all();
        let types = topics.iter().map(|topic| topic.stats()).collect();
        let (held, dropped_held) = self.pause.counts();
        BusStats::new(
            types,
            self.unrouted.load(Ordering::Relaxed),
            held,
            dropped_held,
        )
    }

    /// Attaches a new queue for `E`; `None` if the bus is closed.
    pub(crate) fn subscribe<E: Send + Sync + 'static>(
        &self,
        policy: Policy,
    ) -> Option<Arc<Queue<Envelope<E>>>> {
        let topic = self.topic::<E>();
        let queue = Arc::new(Queue::new(self.next_id(), policy));
        topic.add(queue.clone()).then_some(queue)
    }

    /// A new reader of `E`'s shared log (a default subscription); `None` if the bus is closed.
    pub(crate) fn subscribe_log<E: Send + Sync + 'static>(
        &self,
        policy: &Policy,
    ) -> Option<crate::log::LogReader<E>> {
        self.topic::<E>().add_reader(self.next_id(), policy)
    }

    /// A new reader of `E`'s latest cell (a typed keep-latest subscription); `None` if the bus
    /// is closed.
    pub(crate) fn subscribe_latest<E: Send + Sync + 'static>(
        &self,
        policy: &Policy,
    ) -> Option<crate::latest::LatestReader<E>> {
        self.topic::<E>().add_latest(self.next_id(), policy)
    }

    fn next_id(&self) -> u64 {
        self.next_subscription.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches a new multi-type queue to the topics that `topics` creates; `None` if the bus
    /// is closed.
    pub(crate) fn subscribe_many(
        &self,
        topics: &[TopicOf],
        policy: Policy,
    ) -> Option<Arc<Queue<AnyEnvelope>>> {
        let queue = Arc::new(Queue::new(self.next_id(), policy));
        for topic_of in topics {
            if !topic_of(self).attach_erased(&queue) {
                return None;
            }
        }
        Some(queue)
    }

    /// Attaches a new tap: to every topic now, and to every topic created later.
    pub(crate) fn tap(&self, policy: Policy) -> Option<Arc<Queue<AnyEnvelope>>> {
        let queue = Arc::new(Queue::new(self.next_id(), policy));
        let _writer = self.topics.writer();
        if self.is_closed() {
            return None;
        }
        let mut taps = lock(&self.taps);
        taps.retain(|tap| tap.strong_count() > 0);
        taps.push(Arc::downgrade(&queue));
        self.has_taps.store(true, Ordering::Release);
        drop(taps);
        for topic in self.topics.all() {
            topic.attach_erased(&queue);
        }
        Some(queue)
    }

    /// The topic of `E` as a trait object (for multi-type subscriptions).
    pub(crate) fn topic_dyn<E: Send + Sync + 'static>(&self) -> Arc<dyn AnyTopic> {
        self.topic::<E>()
    }

    /// The topic of `E`, created if missing.
    pub(crate) fn topic<E: Send + Sync + 'static>(&self) -> Arc<Topic<E>> {
        let key = TypeId::of::<E>();
        if let Some(topic) = self.topics.get(key) {
            return downcast_arc(topic);
        }
        let writer = self.topics.writer();
        if let Some(topic) = self.topics.get(key) {
            return downcast_arc(topic);
        }
        let topic = Arc::new(Topic::<E>::new(self.is_closed()));
        for tap in lock(&self.taps).iter().filter_map(Weak::upgrade) {
            topic.clone().attach_erased(&tap);
        }
        // Visible to senders from here on, before it can have a subscriber.
        self.topics.insert(&writer, key, topic.clone());
        topic
    }

    /// First step of closing: from now on sends fail with `Closed` and new topics are created
    /// closed. Set under the table's writer lock so that no topic is created open after it.
    pub(crate) fn mark_closed(&self) {
        let _writer = self.topics.writer();
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the bus: later sends fail with `Closed`, every subscription still attached ends
    /// with [`EndReason::BusClosed`] after yielding what it holds, later subscriptions are
    /// created ended.
    pub(crate) fn close(&self) {
        let topics = {
            let _writer = self.topics.writer();
            self.closed.store(true, Ordering::Release);
            self.topics.all()
        };
        for topic in topics {
            topic.close(EndReason::BusClosed);
        }
        // Anything still held can no longer be delivered: counted and reported as dropped.
        self.pause.start(self);
        self.pause.wake_waiters();
    }
}

const KEYED_BY_TYPE: &str = "topics are keyed by the TypeId of their event type";

fn downcast<E: Send + Sync + 'static>(topic: &dyn AnyTopic) -> &Topic<E> {
    let any: &dyn Any = topic;
    any.downcast_ref::<Topic<E>>().expect(KEYED_BY_TYPE)
}

fn downcast_arc<E: Send + Sync + 'static>(topic: &Arc<dyn AnyTopic>) -> Arc<Topic<E>> {
    let any: Arc<dyn Any + Send + Sync> = topic.clone();
    any.downcast::<Topic<E>>().expect(KEYED_BY_TYPE)
}

/// `send_wait` for any sender: retries `attempt` each time a full subscription (or a full held
/// buffer) makes room. Cancel-safe: the event is published when the future completes, or
/// dropped with it.
pub(crate) fn send_wait<E, F>(
    event: E,
    mut attempt: F,
) -> impl Future<Output = Result<Sent, SendError<E>>> + Send + 'static
where
    E: Send + 'static,
    F: FnMut(E, &Waker) -> Result<Sent, Full<E>> + Send + 'static,
{
    let mut event = Some(event);
    std::future::poll_fn(move |cx| {
        let pending = event.take().expect("polled after completion");
        match attempt(pending, cx.waker()) {
            Ok(sent) => Poll::Ready(Ok(sent)),
            Err(Full::Refused(error)) => Poll::Ready(Err(error)),
            Err(Full::Wait(pending)) => {
                event = Some(pending);
                Poll::Pending
            }
        }
    })
}
