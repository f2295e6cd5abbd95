//! [`Topic<E>`]: the subscribers of one event type on one bus, and the fan-out.
//!
//! Invariants:
//! - A send assigns the envelope's sequence number, pushes it into every live queue, writes it
//!   to the latest cell of the keep-latest subscriptions (`latest.rs`) and appends it to the
//!   shared log of the default subscriptions (`log.rs`), all while holding `inner`: sends of
//!   one type are serialised, so every subscription of the type sees the same order (the send
//!   order), whatever threads the senders run on.
//! - `live` mirrors the number of queues, log readers and keep-latest readers, plus one while
//!   the type retains events (updated under the lock), so that a send with nothing to do
//!   returns without locking and without allocating.
//! - Retained envelopes are appended in the same critical section as the fan-out, and a
//!   replaying queue is preloaded in the critical section that attaches it: replay then live,
//!   no gap, no duplicate.
//! - Wakers are collected during fan-out and woken after `inner` is released.
//! - An event is never dropped while a lock of the crate is held (a payload's `Drop` may send
//!   or subscribe): `send` drops what it did not deliver, retired log segments and evicted
//!   envelopes after releasing the topic lock, and its callers hold no lock of the crate.
//! - Once `closed`, the topic accepts no subscriber and no event, for good.
//!
//! - Multi-type subscriptions and taps (`erased`) get the same envelope, type-erased. While a
//!   topic has any, its sends take the bus's order lock around the sequence number and the
//!   whole fan-out, so every erased queue receives events in bus sequence order across types.
//!
//! - Ownership (`producer.rs`): `inner.owner` is the registration, if any; the `owner` atomic
//!   mirrors it (written under the lock) so that every send checks it with one load. Ending a
//!   registration ends the typed subscriptions attached at that moment (with the reason), never
//!   the multi-type ones and taps, which span types.
//! - Demand is the number of typed and multi-type subscriptions (taps excluded); each change
//!   between zero and non-zero is pushed to the registration's demand watchers, under the lock,
//!   so watchers see exactly one `Started` per 0 → 1 and one `Stopped` per → 0, in order.
//!
//! Lock order: bus topic map (read) → topic → bus order lock → queue; topic → demand watcher;
//! topic → log waiters (a keep-latest reader parks under the topic lock, see `latest.rs`).

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::delivery::{DropLog, Lost};
use crate::error::{RegisterError, SendError, SendErrorKind};
use crate::event::{AnyEnvelope, Envelope};
use crate::latest::{LatestCell, LatestReader};
use crate::log::{Cursor, LogReader, LogWriter, Segment, Waiters};
use crate::producer::{DemandChange, DemandQueue};
use crate::scope::ScopeInfo;
use crate::stats::TypeStats;
use crate::subscription::{EndReason, Queue};
use crate::sync::{WakeList, lock};

pub(crate) struct Topic<E> {
    inner: Mutex<TopicInner<E>>,
    /// Subscriptions, plus one while the type retains events: 0 means a send has nothing to do.
    live: AtomicUsize,
    /// Sends that found no subscriber without taking the lock (sent and undelivered).
    unheard: AtomicU64,
    /// The registration, mirrored from `inner.owner`: 0 if none, else `id << 1 | open`.
    owner: AtomicU64,
    /// The log's parked readers (outside `inner`: parking never takes the topic lock).
    waiters: Waiters,
}

struct TopicInner<E> {
    subs: Vec<Arc<Queue<Envelope<E>>>>,
    /// Multi-type subscriptions and taps attached to this type.
    erased: Vec<Arc<Queue<AnyEnvelope>>>,
    closed: bool,
    /// Keep the last `retention` envelopes for replay (0: keep none).
    retention: usize,
    retained: VecDeque<Envelope<E>>,
    /// Counters of sends that reached the fan-out (see `stats.rs`).
    counts: Counts,
    /// The shared log of the default (unbounded, lossless) subscriptions (`log.rs`).
    log: LogWriter<E>,
    /// The shared cell of the typed keep-latest subscriptions (`latest.rs`).
    latest: LatestCell<E>,
    /// The registration that owns the type, if any.
    owner: Option<Owner>,
    /// Demand as last computed (see the module invariants).
    demand: usize,
}

/// What [`TopicInner::write_shared`] leaves to drop after the lock, and what it superseded.
struct Written<E> {
    /// The envelope, if no shared reader took it.
    unsent: Option<Envelope<E>>,
    /// The envelope the latest cell held before.
    replaced: Option<Envelope<E>>,
    /// A log segment the writer moved past.
    retired: Option<Arc<Segment<E>>>,
    /// Pending keep-latest events this one superseded.
    superseded: u64,
}

impl<E> TopicInner<E> {
    /// Writes `envelope` for the shared readers: the keep-latest cell and the log, each only
    /// if it has readers. The last to take it takes the sender's handle, not a clone.
    #[inline]
    fn write_shared(&mut self, envelope: Envelope<E>) -> Written<E> {
        let mut written = Written {
            unsent: Some(envelope),
            replaced: None,
            retired: None,
            superseded: 0,
        };
        let to_log = !self.log.readers.is_empty();
        if !self.latest.readers.is_empty() {
            // Every keep-latest subscription at once: one cell, whatever their number.
            let envelope = if to_log {
                written.unsent.clone()
            } else {
                written.unsent.take()
            };
            let (superseded, replaced) = self.latest.write(envelope.expect("not taken yet"));
            written.superseded = superseded;
            written.replaced = replaced;
        }
        if to_log {
            // Every default subscription at once: one slot, whatever their number.
            written.retired = self
                .log
                .write(written.unsent.take().expect("not taken yet"));
        }
        written
    }
}

/// A registration of the type (`producer.rs`).
struct Owner {
    id: u64,
    scope: Arc<ScopeInfo>,
    /// The registration set the retention (catch-up): reset when it ends.
    catch_up: bool,
    watchers: Vec<Arc<DemandQueue>>,
}

/// Who is sending: anyone (a plain send), the library (a system event), a producer, or a
/// paused bus delivering what it held (checked when it was held).
#[derive(Clone, Copy)]
pub(crate) enum Sender {
    Anyone,
    Library,
    Producer(u64),
    Held,
}

/// What a send carries: a new event, or an envelope stamped already (one a paused bus held,
/// or an event the NATS bridge imported).
pub(crate) enum Payload<E> {
    Event(E),
    Held(Envelope<E>),
}

impl<E> Payload<E> {
    pub(crate) fn into_envelope(self, origin: &Arc<ScopeInfo>) -> Envelope<E> {
        match self {
            Payload::Event(event) => Envelope::new(event, origin.clone()),
            Payload::Held(envelope) => envelope,
        }
    }

    pub(crate) fn into_event(self) -> E {
        match self {
            Payload::Event(event) => event,
            Payload::Held(envelope) => envelope.into_event().expect("a held envelope is unshared"),
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: u64,
    delivered: u64,
    dropped_critical: u64,
    dropped_lossy: u64,
    superseded: u64,
    undelivered: u64,
}

impl Counts {
    /// Counts a send that `accepted` subscriptions took; `false` if none did (the last reader
    /// left between the `live` check and the lock).
    #[inline]
    fn sent(&mut self, accepted: usize) -> bool {
        self.sent += 1;
        self.delivered += accepted as u64;
        self.undelivered += u64::from(accepted == 0);
        accepted > 0
    }
}

/// Why a topic did not send.
pub(crate) enum Full<E> {
    /// Refused: closed, not the owner, or unregistered.
    Refused(SendError<E>),
    /// `send_wait` only: a `Wait` subscription is full; the waker is registered.
    Wait(E),
}

impl<E> Full<E> {
    /// Why a send that cannot wait (no waker given) failed.
    #[cfg(feature = "nats")]
    pub(crate) fn kind(self) -> crate::error::SendErrorKind {
        match self {
            Full::Refused(error) => error.kind(),
            Full::Wait(_) => unreachable!("only `send_wait` waits for room"),
        }
    }
}

/// The type-erased face of a topic, for what the bus does to all topics alike.
pub(crate) trait AnyTopic: Any + Send + Sync {
    fn stats(&self) -> TypeStats;
    /// Detaches the queue, log reader or keep-latest reader with `id`, if attached.
    fn remove(&self, id: u64);
    /// Ends the log or keep-latest reader with `id` at the current position.
    fn end_reader(&self, id: u64, reason: EndReason);
    /// Attaches a multi-type queue; `false` if the topic is closed.
    fn attach_erased(self: Arc<Self>, queue: &Arc<Queue<AnyEnvelope>>) -> bool;
    /// Closes the topic and ends every queue with `reason`.
    fn close(&self, reason: EndReason);
}

impl<E: Send + Sync + 'static> Topic<E> {
    pub(crate) fn new(closed: bool) -> Self {
        Self {
            inner: Mutex::new(TopicInner {
                subs: Vec::new(),
                erased: Vec::new(),
                closed,
                retention: 0,
                retained: VecDeque::new(),
                counts: Counts::default(),
                log: LogWriter::new(),
                latest: LatestCell::new(),
                owner: None,
                demand: 0,
            }),
            live: AtomicUsize::new(0),
            unheard: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            waiters: Waiters::new(),
        }
    }

    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Why `sender` may not send this type now, if it may not.
    #[inline]
    pub(crate) fn refuses(&self, sender: Sender) -> Option<SendErrorKind> {
        let owner = self.owner.load(Ordering::Acquire);
        match sender {
            Sender::Anyone | Sender::Library => {
                (owner != 0 && owner & 1 == 0).then_some(SendErrorKind::NotOwner)
            }
            Sender::Producer(id) => (owner >> 1 != id).then_some(SendErrorKind::Unregistered),
            Sender::Held => None,
        }
    }

    /// Publishes `event` to every live subscription; returns how many accepted it.
    ///
    /// Nothing is dropped while the topic lock is held (an event's `Drop` may use the bus): an
    /// event nobody took, a retired log segment and evicted envelopes are dropped after it is
    /// released, and what the send lost goes to `on_loss` then too.
    ///
    /// With `wait` (from `send_wait`), the send happens only if every `Overflow::Wait`
    /// subscription has room — checked in the same critical section as the fan-out, so no other
    /// send can take that room first. Otherwise the waker is registered with the full
    /// subscriptions and the event comes back as `Err(Full)`.
    #[inline]
    #[expect(
        clippy::too_many_arguments,
        reason = "one internal call site per send form"
    )]
    pub(crate) fn send(
        &self,
        next_seq: impl FnOnce() -> u64,
        origin: &Arc<ScopeInfo>,
        payload: Payload<E>,
        sender: Sender,
        wait: Option<&Waker>,
        order: &Mutex<()>,
        on_loss: impl FnOnce(Lost),
    ) -> Result<usize, Full<E>> {
        if let Some(kind) = self.refuses(sender) {
            return Err(Full::Refused(SendError::new(kind, payload.into_event())));
        }
        if self.live.load(Ordering::Acquire) == 0 {
            self.unheard.fetch_add(1, Ordering::Relaxed);
            drop(payload);
            return Ok(0);
        }
        let envelope = payload.into_envelope(origin);
        let inner = lock(&self.inner);
        // A producer's registration may have ended since the check above: checked again here,
        // where it cannot change, so nothing is delivered after the end.
        let refused = if inner.closed {
            Some(SendErrorKind::Closed)
        } else if let Sender::Producer(id) = sender
            && inner.owner.as_ref().is_none_or(|owner| owner.id != id)
        {
            Some(SendErrorKind::Unregistered)
        } else {
            None
        };
        if let Some(kind) = refused {
            drop(inner);
            let event = envelope.into_event().expect("envelope not shared");
            return Err(Full::Refused(SendError::new(kind, event)));
        }
        if wait.is_none()
            && inner.subs.is_empty()
            && inner.erased.is_empty()
            && inner.retention == 0
        {
            if inner.latest.readers.is_empty() {
                Ok(self.send_to_log(inner, envelope, next_seq))
            } else {
                Ok(self.send_to_shared(inner, envelope, next_seq))
            }
        } else {
            self.send_to_all(inner, envelope, next_seq, wait, order, on_loss)
        }
    }

    /// The fan-out when only default subscriptions (log readers) are attached — the common
    /// case, kept apart so that it needs neither a drop log nor a wake list unless a reader is
    /// parked.
    #[inline]
    fn send_to_log(
        &self,
        inner: MutexGuard<'_, TopicInner<E>>,
        envelope: Envelope<E>,
        next_seq: impl FnOnce() -> u64,
    ) -> usize {
        let accepted = inner.log.readers.len();
        self.send_shared(inner, envelope, next_seq, accepted, |inner, envelope| {
            inner.log.write(envelope)
        })
    }

    /// [`send_to_log`](Self::send_to_log) when typed keep-latest subscriptions are attached
    /// too (or alone): the same, plus the latest cell.
    #[inline(never)]
    fn send_to_shared(
        &self,
        inner: MutexGuard<'_, TopicInner<E>>,
        envelope: Envelope<E>,
        next_seq: impl FnOnce() -> u64,
    ) -> usize {
        let accepted = inner.log.readers.len() + inner.latest.readers.len();
        self.send_shared(inner, envelope, next_seq, accepted, |inner, envelope| {
            let written = inner.write_shared(envelope);
            inner.counts.superseded += written.superseded;
            written
        })
    }

    /// The body of both shared fan-outs: counts the send, lets `write` put the envelope where
    /// the `accepted` readers read it, wakes the parked ones after the lock, and drops what
    /// `write` hands back (a retired segment, a replaced envelope) last.
    #[inline]
    fn send_shared<Left>(
        &self,
        mut inner: MutexGuard<'_, TopicInner<E>>,
        mut envelope: Envelope<E>,
        next_seq: impl FnOnce() -> u64,
        accepted: usize,
        write: impl FnOnce(&mut TopicInner<E>, Envelope<E>) -> Left,
    ) -> usize {
        envelope.set_seq(next_seq());
        if !inner.counts.sent(accepted) {
            drop(inner);
            drop(envelope);
            return 0;
        }
        let left = write(&mut inner, envelope);
        let wakers = self.waiters.after_write();
        drop(inner);
        if let Some(mut wakers) = wakers {
            wakers.wake_all();
        }
        drop(left);
        accepted
    }

    /// The general fan-out: queues with a policy, multi-type queues and taps, retention,
    /// `send_wait`'s room check, then the log.
    #[inline(never)]
    fn send_to_all(
        &self,
        mut inner: MutexGuard<'_, TopicInner<E>>,
        mut envelope: Envelope<E>,
        next_seq: impl FnOnce() -> u64,
        wait: Option<&Waker>,
        order: &Mutex<()>,
        on_loss: impl FnOnce(Lost),
    ) -> Result<usize, Full<E>> {
        if let Some(waker) = wait {
            // `&`, not `&&`: register with every full subscription, not just the first.
            let room = inner
                .subs
                .iter()
                .fold(true, |room, q| room & q.has_room(waker))
                & inner
                    .erased
                    .iter()
                    .fold(true, |room, q| room & q.has_room(waker));
            if !room {
                drop(inner);
                let event = envelope.into_event().expect("envelope not shared");
                return Err(Full::Wait(event));
            }
        }
        let mut drops = DropLog::new(std::any::type_name::<E>());
        let mut wakers = WakeList::new();
        // Erased queues see several types: one bus-wide order for them (module invariants).
        let ordered = (!inner.erased.is_empty()).then(|| lock(order));
        envelope.set_seq(next_seq());
        let mut accepted = 0;
        for queue in &inner.subs {
            accepted += usize::from(queue.push(&envelope, &mut wakers, &mut drops));
        }
        if !inner.erased.is_empty() {
            let erased = AnyEnvelope::from(envelope.clone());
            for queue in &inner.erased {
                accepted += usize::from(queue.push(&erased, &mut wakers, &mut drops));
            }
        }
        drop(ordered);
        if inner.retention > 0 {
            inner.retained.push_back(envelope.clone());
            if inner.retained.len() > inner.retention {
                let oldest = inner.retained.pop_front().expect("over the retention");
                drops.evicted(oldest.into());
            }
        }
        // Last, so that the cell or the log takes the sender's handle instead of a clone.
        let shared = inner.log.readers.len() + inner.latest.readers.len();
        let written = inner.write_shared(envelope);
        if shared > 0 {
            accepted += shared;
            drops.superseded += written.superseded;
            if let Some(parked) = self.waiters.after_write() {
                wakers.append(parked);
            }
        }
        let counts = &mut inner.counts;
        counts.sent(accepted);
        counts.dropped_critical += drops.critical;
        counts.dropped_lossy += drops.lossy;
        counts.superseded += drops.superseded;
        drop(inner);
        wakers.wake_all();
        drop(written);
        if drops.has_loss() {
            on_loss(drops.into_lost());
        }
        Ok(accepted)
    }

    /// Attaches a subscription: `f` adds it under the lock that every fan-out takes, told
    /// whether it gets the retained events first (it asks for replay, or the type has
    /// catch-up), so replay and live events neither overlap nor leave a gap. Then the demand
    /// is recounted and its watchers woken after the lock. `None` if the topic is closed.
    fn attach_subscription<R>(
        &self,
        replay: bool,
        f: impl FnOnce(&mut TopicInner<E>, bool) -> R,
    ) -> Option<R> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return None;
        }
        let catch_up = inner.owner.as_ref().is_some_and(|owner| owner.catch_up);
        let attached = f(&mut inner, replay || catch_up);
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        Some(attached)
    }

    /// The shared state of a new log or keep-latest reader of this topic.
    fn cursor(self: &Arc<Self>, id: u64, policy: &crate::delivery::Policy) -> Arc<Cursor> {
        let me: Arc<dyn AnyTopic> = self.clone();
        Arc::new(Cursor::new(
            id,
            policy.name.clone(),
            policy.linked,
            Arc::downgrade(&me),
        ))
    }

    /// Adds a queue, preloaded with the retained events if it gets them. `false` if the topic
    /// is closed.
    pub(crate) fn add(self: &Arc<Self>, queue: Arc<Queue<Envelope<E>>>) -> bool {
        let me: Arc<dyn AnyTopic> = self.clone();
        self.attach_subscription(queue.policy.replay, |inner, replay| {
            if replay {
                queue.preload(inner.retained.iter());
            }
            queue.attached_to(Arc::downgrade(&me));
            inner.subs.push(queue);
        })
        .is_some()
    }

    /// Adds a default subscription: a reader of the shared log, given the retained events
    /// first if it gets them. `None` if the topic is closed.
    pub(crate) fn add_reader(
        self: &Arc<Self>,
        id: u64,
        policy: &crate::delivery::Policy,
    ) -> Option<LogReader<E>> {
        let cursor = self.cursor(id, policy);
        self.attach_subscription(policy.replay, |inner, replay| {
            let start = inner.log.attach(cursor.clone());
            let mut reader = LogReader::new(self.clone(), cursor, start);
            if replay {
                reader.preload(inner.retained.iter().cloned());
            }
            reader
        })
    }

    /// Adds a typed keep-latest subscription: a reader of the type's latest cell, given the
    /// newest retained event first if it gets the retained events. `None` if the topic is
    /// closed.
    pub(crate) fn add_latest(
        self: &Arc<Self>,
        id: u64,
        policy: &crate::delivery::Policy,
    ) -> Option<LatestReader<E>> {
        let cursor = self.cursor(id, policy);
        self.attach_subscription(policy.replay, |inner, replay| {
            let newest = if replay { inner.retained.back() } else { None };
            inner.latest.attach(cursor.clone(), newest);
        })?;
        Some(LatestReader::new(self.clone(), cursor))
    }

    /// Runs `f` on the latest cell under the topic lock (a keep-latest reader's look, and its
    /// parking: see `latest.rs`).
    pub(crate) fn with_latest<R>(&self, f: impl FnOnce(&mut LatestCell<E>, &Waiters) -> R) -> R {
        f(&mut lock(&self.inner).latest, &self.waiters)
    }

    /// The log position of the next event.
    pub(crate) fn log_position(&self) -> u64 {
        lock(&self.inner).log.next
    }

    /// Makes the type owned by registration `id`, from `scope`, keeping the last `retain`
    /// events for new subscribers (catch-up) if `retain > 0`.
    pub(crate) fn register(
        &self,
        id: u64,
        open: bool,
        retain: usize,
        scope: &Arc<ScopeInfo>,
    ) -> Result<(), RegisterError> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(RegisterError::Closed);
        }
        if let Some(owner) = &inner.owner {
            return Err(RegisterError::Taken {
                owner: owner.scope.clone(),
            });
        }
        inner.owner = Some(Owner {
            id,
            scope: scope.clone(),
            catch_up: retain > 0,
            watchers: Vec::new(),
        });
        if retain > 0 {
            inner.retention = retain;
        }
        self.owner
            .store(id << 1 | u64::from(open), Ordering::Release);
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        Ok(())
    }

    /// Ends registration `id` (if it is still the owner): the typed subscriptions attached now
    /// end with `reason` after yielding what they hold, the demand watchers end, catch-up
    /// retention is dropped. The type can then be registered again.
    pub(crate) fn end_registration(&self, id: u64, reason: EndReason) {
        let mut inner = lock(&self.inner);
        if inner.owner.as_ref().is_none_or(|owner| owner.id != id) {
            return;
        }
        let owner = inner.owner.take().expect("checked");
        self.owner.store(0, Ordering::Release);
        let mut retained = VecDeque::new();
        if owner.catch_up {
            inner.retention = 0;
            retained = std::mem::take(&mut inner.retained);
        }
        let subs = std::mem::take(&mut inner.subs);
        let tail = inner.log.end_all(reason);
        let latest = inner.latest.end_all(reason);
        let readers = self.waiters.take_all();
        let wakers = self.update_live(&mut inner);
        drop(inner);
        // No lock held from here: payloads may be dropped, wakers woken.
        wake(wakers);
        wake(readers);
        drop((tail, latest));
        drop(retained);
        for queue in subs {
            queue.end(reason);
        }
        for watcher in owner.watchers {
            watcher.end();
        }
    }

    /// Whether registration `id` still owns the type.
    pub(crate) fn is_owned_by(&self, id: u64) -> bool {
        self.owner.load(Ordering::Acquire) >> 1 == id
    }

    /// The demand now (typed and multi-type subscriptions, not taps).
    pub(crate) fn demand(&self) -> usize {
        lock(&self.inner).demand
    }

    /// A new demand watcher of registration `id`, told `Started` at once if there is demand
    /// now; `None` if the registration has ended.
    pub(crate) fn watch_demand(&self, id: u64) -> Option<Arc<DemandQueue>> {
        let mut inner = lock(&self.inner);
        let demand = inner.demand;
        let owner = inner.owner.as_mut().filter(|owner| owner.id == id)?;
        let watcher = Arc::new(DemandQueue::new());
        if demand > 0 {
            drop(watcher.push(DemandChange::Started)); // nobody is waiting on it yet
        }
        owner.watchers.retain(|w| Arc::strong_count(w) > 1);
        owner.watchers.push(watcher.clone());
        Some(watcher)
    }

    /// Sets how many recent events the topic keeps for replay. Returns what no longer fits, to
    /// be dropped by the caller with no lock held.
    pub(crate) fn set_retention(&self, retention: usize) -> Vec<Envelope<E>> {
        let mut inner = lock(&self.inner);
        inner.retention = retention;
        let excess = inner.retained.len().saturating_sub(retention);
        let evicted = inner.retained.drain(..excess).collect();
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        evicted
    }

    /// Updates `live` and the demand; returns the demand watchers to wake (after the lock).
    fn update_live(&self, inner: &mut TopicInner<E>) -> Vec<Waker> {
        let typed = inner.subs.len() + inner.log.readers.len() + inner.latest.readers.len();
        let live = typed + inner.erased.len() + usize::from(inner.retention > 0);
        self.live.store(live, Ordering::Release);
        let taps = inner.erased.iter().filter(|q| q.policy.tap).count();
        let demand = typed + inner.erased.len() - taps;
        let before = std::mem::replace(&mut inner.demand, demand);
        let change = match (before, demand) {
            (0, 1..) => DemandChange::Started,
            (1.., 0) => DemandChange::Stopped,
            _ => return Vec::new(),
        };
        match &inner.owner {
            Some(owner) => owner
                .watchers
                .iter()
                .filter_map(|watcher| watcher.push(change))
                .collect(),
            None => Vec::new(),
        }
    }
}

fn wake(wakers: impl IntoIterator<Item = Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl<E: Send + Sync + 'static> AnyTopic for Topic<E> {
    fn remove(&self, id: u64) {
        let mut inner = lock(&self.inner);
        let typed = inner.subs.iter().position(|queue| queue.id == id);
        let erased = inner.erased.iter().position(|queue| queue.id == id);
        let removed_typed = typed.map(|index| inner.subs.swap_remove(index));
        let removed_erased = erased.map(|index| inner.erased.swap_remove(index));
        let (was_reader, tail) = inner.log.detach(id);
        let (was_latest, kept, current) = inner.latest.detach(id);
        let parked = (was_reader || was_latest)
            .then(|| self.waiters.take(id))
            .flatten();
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        drop(parked);
        // Dropped with no lock held: the last handle may free queued payloads.
        drop((removed_typed, removed_erased, tail, kept, current));
    }

    fn end_reader(&self, id: u64, reason: EndReason) {
        let mut inner = lock(&self.inner);
        let tail = inner.log.end_one(id, reason);
        let (_, current) = inner.latest.end_one(id, reason);
        let waker = self.waiters.take(id);
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        wake(waker);
        drop((tail, current));
    }

    fn attach_erased(self: Arc<Self>, queue: &Arc<Queue<AnyEnvelope>>) -> bool {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return false;
        }
        if queue.policy.replay {
            let retained: Vec<AnyEnvelope> = inner
                .retained
                .iter()
                .cloned()
                .map(AnyEnvelope::from)
                .collect();
            queue.preload(retained.iter());
        }
        let me: Arc<dyn AnyTopic> = self.clone();
        queue.attached_to(Arc::downgrade(&me));
        inner.erased.push(queue.clone());
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        true
    }

    fn stats(&self) -> TypeStats {
        let inner = lock(&self.inner);
        let unheard = self.unheard.load(Ordering::Relaxed);
        let c = &inner.counts;
        TypeStats {
            type_id: TypeId::of::<E>(),
            type_name: std::any::type_name::<E>(),
            subscriptions: inner.subs.len()
                + inner.log.readers.len()
                + inner.latest.readers.len()
                + inner.erased.len(),
            sent: c.sent + unheard,
            delivered: c.delivered,
            dropped_critical: c.dropped_critical,
            dropped_lossy: c.dropped_lossy,
            superseded: c.superseded,
            undelivered: c.undelivered + unheard,
            retained: inner.retained.len(),
        }
    }

    fn close(&self, reason: EndReason) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        let subs = std::mem::take(&mut inner.subs);
        let erased = std::mem::take(&mut inner.erased);
        let retained = std::mem::take(&mut inner.retained);
        let tail = inner.log.end_all(reason);
        let latest = inner.latest.end_all(reason);
        let readers = self.waiters.take_all();
        inner.retention = 0;
        // The demand watchers end with the topic (their producer can no longer send).
        let watchers = inner
            .owner
            .as_mut()
            .map(|owner| std::mem::take(&mut owner.watchers))
            .unwrap_or_default();
        let wakers = self.update_live(&mut inner);
        drop(inner);
        wake(wakers);
        wake(readers);
        drop((retained, tail, latest));
        for watcher in watchers {
            watcher.end();
        }
        for queue in subs {
            queue.end(reason);
        }
        for queue in erased {
            queue.end(reason);
        }
    }
}
