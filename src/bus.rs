//! [`Bus`]: the event bus owned by a root or isolated scope, routing by exact `TypeId`.
//!
//! Invariants:
//! - One [`Topic`] per event type, created on first subscription and kept for the bus's life
//!   (memory grows with the number of types used, not with traffic).
//! - A send for a type that has no topic, or whose topic has no subscriber, allocates nothing.
//!   For a type that never had a topic it usually takes no lock at all (`maybe_topic`);
//!   otherwise it takes the map's read lock once.
//! - `closed` goes from `false` to `true` once, when the owning scope finishes its body; from then
//!   on sends fail with `Closed` and subscriptions are created already ended.
//! - Sequence numbers are drawn from one counter per bus, inside the topic lock (see `topic.rs`).
//! - The drop callback is called, and undelivered or evicted payloads are dropped, only after
//!   every lock of the send has been released.
//!
//! Lock order: `topics` (read or write) → `taps` → topic → `order` → queue. The write lock is
//! only taken to insert a new topic, to add a tap and to close the bus, never while a topic lock
//! is held.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::Waker;

use crate::delivery::{DropCallback, DropLog, Policy};
use crate::error::{SendError, SendErrorKind};
use crate::event::{AnyEnvelope, Envelope};
use crate::scope::ScopeInfo;
use crate::stats::BusStats;
use crate::subscription::{EndReason, Queue};
use crate::sync::lock;
use crate::system::{DeadLetter, EventDropped};
use crate::topic::{AnyTopic, Full, Topic, Unsent};

/// Gets (creating if needed) the topic of one event type, type-erased.
pub(crate) type TopicOf = fn(&Bus) -> Arc<dyn AnyTopic>;

type TopicMap = HashMap<TypeId, Arc<dyn AnyTopic>, BuildHasherDefault<TypeIdHasher>>;

pub(crate) struct Bus {
    topics: RwLock<TopicMap>,
    on_drop: Option<DropCallback>,
    /// Publish a `DeadLetter` for every event that reaches no subscription.
    dead_letters: bool,
    /// Sends of types that never had a subscriber (they have no topic).
    unrouted: AtomicU64,
    /// One bit per `TypeId` hash (mod 64), set before a topic of that type becomes visible and
    /// never cleared: a clear bit proves the type has no topic, so the send skips the map's
    /// lock (the common "nobody ever listened to this" case, system events included).
    maybe_topic: AtomicU64,
    /// Taken by the fan-out of types that have multi-type subscribers or taps (see `topic.rs`).
    order: Mutex<()>,
    /// Taps: attached to every topic, including topics created later. Written under the map's
    /// write lock, so a new topic and a new tap always meet.
    taps: Mutex<Vec<Weak<Queue<AnyEnvelope>>>>,
    has_taps: AtomicBool,
    seq: AtomicU64,
    next_subscription: AtomicU64,
    closed: AtomicBool,
}

impl Bus {
    pub(crate) fn new(on_drop: Option<DropCallback>, dead_letters: bool) -> Self {
        Self {
            topics: RwLock::new(TopicMap::default()),
            on_drop,
            dead_letters,
            unrouted: AtomicU64::new(0),
            maybe_topic: AtomicU64::new(0),
            order: Mutex::new(()),
            taps: Mutex::new(Vec::new()),
            has_taps: AtomicBool::new(false),
            seq: AtomicU64::new(1),
            next_subscription: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Publishes `event` to every subscription of `E` on this bus.
    pub(crate) fn send<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
    ) -> Result<usize, SendError<E>> {
        match self.send_inner(origin, event, None) {
            Ok(count) => Ok(count),
            Err(Full::Closed(error)) => Err(error),
            Err(Full::Wait(_)) => unreachable!("only `send_wait` waits for room"),
        }
    }

    /// One attempt of `send_wait`: sends if every `Wait` subscription has room, otherwise
    /// registers `waker` and hands the event back.
    pub(crate) fn try_send_with_room<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
        waker: &Waker,
    ) -> Result<usize, Full<E>> {
        self.send_inner(origin, event, Some(waker))
    }

    fn send_inner<E: Send + Sync + 'static>(
        &self,
        origin: &Arc<ScopeInfo>,
        event: E,
        wait: Option<&Waker>,
    ) -> Result<usize, Full<E>> {
        if self.is_closed() {
            return Err(Full::Closed(SendError::new(SendErrorKind::Closed, event)));
        }
        if self.has_taps.load(Ordering::Acquire) {
            // A tap sees every type: make sure this one has a topic (someone listens).
            drop(self.topic::<E>());
        } else if self.maybe_topic.load(Ordering::Acquire) & type_bit::<E>() == 0 {
            // No topic can exist for `E`: nothing to look up, nothing to allocate.
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            drop(event);
            if self.dead_letters && TypeId::of::<E>() != TypeId::of::<DeadLetter>() {
                self.dead_letter::<E>(origin);
            }
            return Ok(0);
        }
        let mut drops = DropLog::new(std::any::type_name::<E>());
        let (result, unsent) = {
            let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
            match topics.get(&TypeId::of::<E>()) {
                None => {
                    self.unrouted.fetch_add(1, Ordering::Relaxed);
                    (Ok(0), Unsent::Event(event))
                }
                Some(topic) => downcast::<E>(topic.as_ref()).send(
                    || self.seq.fetch_add(1, Ordering::Relaxed),
                    origin,
                    event,
                    &mut drops,
                    wait,
                    &self.order,
                ),
            }
        };
        // Everything below runs with no lock held: a payload's `Drop`, the drop callback and
        // the system events it publishes may use this bus.
        drop(unsent);
        let system = TypeId::of::<E>();
        if !drops.reports.is_empty() || !drops.evicted.is_empty() {
            self.account(drops, origin, system != TypeId::of::<EventDropped>());
        }
        if self.dead_letters && matches!(result, Ok(0)) && system != TypeId::of::<DeadLetter>() {
            self.dead_letter::<E>(origin);
        }
        result
    }

    fn dead_letter<E: 'static>(&self, origin: &Arc<ScopeInfo>) {
        let _ = self.send(
            origin,
            DeadLetter {
                event_type: std::any::type_name::<E>(),
                origin: origin.clone(),
            },
        );
    }

    /// Reports critical drops to the callback and as `EventDropped` events, and drops evicted
    /// envelopes (no lock held).
    fn account(&self, drops: DropLog, origin: &Arc<ScopeInfo>, publish: bool) {
        drop(drops.evicted);
        for report in drops.reports {
            if let Some(callback) = &self.on_drop {
                callback(&report);
            }
            if publish {
                let _ = self.send(origin, EventDropped { report });
            }
        }
    }

    /// Keeps the last `count` events of `E` for replay (0: stop keeping).
    pub(crate) fn retain<E: Send + Sync + 'static>(&self, count: usize) {
        let evicted = self.topic::<E>().set_retention(count);
        drop(evicted); // no lock held
    }

    /// A snapshot of the bus's counters.
    pub(crate) fn stats(&self) -> BusStats {
        let topics: Vec<Arc<dyn AnyTopic>> = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let types = topics.iter().map(|topic| topic.stats()).collect();
        BusStats::new(types, self.unrouted.load(Ordering::Relaxed))
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
        let map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return None;
        }
        let mut taps = lock(&self.taps);
        taps.retain(|tap| tap.strong_count() > 0);
        taps.push(Arc::downgrade(&queue));
        self.has_taps.store(true, Ordering::Release);
        drop(taps);
        for topic in map.values() {
            topic.clone().attach_erased(&queue);
        }
        Some(queue)
    }

    /// The topic of `E` as a trait object (for multi-type subscriptions).
    pub(crate) fn topic_dyn<E: Send + Sync + 'static>(&self) -> Arc<dyn AnyTopic> {
        self.topic::<E>()
    }

    /// The topic of `E`, created if missing.
    fn topic<E: Send + Sync + 'static>(&self) -> Arc<Topic<E>> {
        let key = TypeId::of::<E>();
        if let Some(topic) = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return downcast_arc(topic);
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(topic) = topics.get(&key) {
            return downcast_arc(topic);
        }
        let topic = Arc::new(Topic::<E>::new(self.is_closed()));
        for tap in lock(&self.taps).iter().filter_map(Weak::upgrade) {
            topic.clone().attach_erased(&tap);
        }
        topics.insert(key, topic.clone());
        // Before the topic can have a subscriber (we still hold the write lock): any send that
        // happens after a `subscribe()` returned sees the bit.
        self.maybe_topic
            .fetch_or(type_bit::<E>(), Ordering::Release);
        topic
    }

    /// First step of closing: from now on sends fail with `Closed` and new topics are created
    /// closed. Set under the write lock so that no topic is created open after it.
    pub(crate) fn mark_closed(&self) {
        let _map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the bus: later sends fail with `Closed`, every subscription still attached ends
    /// with [`EndReason::BusClosed`] after yielding what it holds, later subscriptions are
    /// created ended.
    pub(crate) fn close(&self) {
        let topics: Vec<Arc<dyn AnyTopic>> = {
            let map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
            self.closed.store(true, Ordering::Release);
            map.values().cloned().collect()
        };
        for topic in topics {
            topic.close(EndReason::BusClosed);
        }
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

/// The bit of `E` in `Bus::maybe_topic`.
fn type_bit<E: 'static>() -> u64 {
    let mut hasher = TypeIdHasher::default();
    TypeId::of::<E>().hash(&mut hasher);
    1 << (hasher.finish() % 64)
}

/// A hasher for `TypeId` keys: a `TypeId` is already a high-quality hash, so use its bits.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `TypeId` today; fold the bytes in so any other use still hashes well.
        for &byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }

    fn write_u128(&mut self, value: u128) {
        self.0 ^= value as u64 ^ (value >> 64) as u64;
    }
}
