//! [`Subscription<E>`]: one subscriber's queue on a bus, read as a `Stream`.
//!
//! Design: a default subscription (unbounded, lossless) reads its type's shared log
//! (`log.rs`): a send writes one slot for all of them. A subscription with a delivery policy,
//! and a multi-type one, owns a queue ([`Queue`]) that the topic pushes envelopes into, so that
//! each can apply its own capacity and overflow rule; the topic lock held during the fan-out
//! keeps one total order per bus and type for both kinds. This module holds the queues, the
//! [`Reader`] of a queue, and [`Subscription`], which reads either.
//!
//! Invariants:
//! - A queue accepts events until it is *ended* (`end` set); after that it only yields what it
//!   holds, then the stream returns `None` for good.
//! - The reader moves everything queued into its private `local` buffer with one lock (a swap of
//!   two `VecDeque`s, capacities reused), so a busy reader takes the lock once per batch.
//! - A waker is stored only while the reader is parked on an empty queue; the sender takes it, so
//!   a reader that is not parked is never woken.
//! - A bounded queue never holds more than its capacity, and its reader takes one item per lock
//!   (no private batch), so the capacity is exact. Every event it loses is counted (`lost`) and
//!   marked as a gap before the next item it does deliver.
//! - The item indices used by gap marks restart at 0 whenever an unbounded reader takes a
//!   whole batch (an unbounded queue never has gaps, so nothing refers to the old indices).
//!
//! - A queue is generic over its item: `Envelope<E>` for a typed subscription, `AnyEnvelope`
//!   for a multi-type one or a tap (attached to several topics). [`Reader`] holds the reading
//!   logic both share.
//!
//! Lock order: topic → (bus order lock) → queue state. A queue's `topics` list is a leaf lock. A queue lock is held only for a push, a swap or a flag change.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;

use crate::delivery::{DropLog, Overflow, Policy};
use crate::event::{AnyEnvelope, Envelope};
use crate::latest::LatestReader;
use crate::log::LogReader;
use crate::sync::{WakeList, lock};
use crate::topic::AnyTopic;

/// Why a [`Subscription`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// The scope that created the subscription finished its body normally.
    ScopeFinished,
    /// The scope that created the subscription failed (its body or one of its tasks panicked).
    ScopeFailed,
    /// The scope that created the subscription was cancelled (its `run` future was dropped).
    ScopeCancelled,
    /// The bus was closed because the scope that owns it finished, or was closed already when
    /// the subscription was made.
    BusClosed,
    /// The event type's [`Producer`](crate::Producer) was unregistered: explicitly with
    /// [`Producer::unregister`](crate::Producer::unregister), or because its last handle was
    /// dropped.
    Unregistered,
    /// The event type's owner scope (where it was registered) finished normally.
    OwnerFinished,
    /// The event type's owner scope failed: its body or one of its tasks panicked. Abnormal.
    OwnerFailed,
    /// The event type's owner scope was cancelled (its `run` future was dropped). Abnormal.
    OwnerCancelled,
}

impl EndReason {
    /// `true` when the producer of the events ended abnormally ([`OwnerFailed`],
    /// [`OwnerCancelled`]): a [linked](crate::SubscriptionBuilder::linked) subscription then
    /// cancels its consuming task instead of ending.
    ///
    /// [`OwnerFailed`]: EndReason::OwnerFailed
    /// [`OwnerCancelled`]: EndReason::OwnerCancelled
    pub fn is_abnormal(self) -> bool {
        matches!(self, EndReason::OwnerFailed | EndReason::OwnerCancelled)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::ScopeFinished => "its scope finished",
            EndReason::ScopeFailed => "its scope failed",
            EndReason::ScopeCancelled => "its scope was cancelled",
            EndReason::BusClosed => "the bus is closed",
            EndReason::Unregistered => "its producer was unregistered",
            EndReason::OwnerFinished => "its producer's scope finished",
            EndReason::OwnerFailed => "its producer's scope failed",
            EndReason::OwnerCancelled => "its producer's scope was cancelled",
        })
    }
}

/// What a queue holds: a typed envelope or an erased one.
pub(crate) trait Item: Clone + Send + Sync + 'static {
    fn erase(self) -> AnyEnvelope;
}

impl<E: Send + Sync + 'static> Item for Envelope<E> {
    fn erase(self) -> AnyEnvelope {
        AnyEnvelope::from(self)
    }
}

impl Item for AnyEnvelope {
    fn erase(self) -> AnyEnvelope {
        self
    }
}

/// The shared half of a subscription: what topics push into.
pub(crate) struct Queue<T> {
    pub(crate) id: u64,
    /// The topics this queue is attached to (one for a typed subscription).
    topics: Mutex<Vec<Weak<dyn AnyTopic>>>,
    pub(crate) policy: Policy,
    state: Mutex<QueueState<T>>,
}

struct QueueState<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    end: Option<EndReason>,
    /// Bounded queues only: how many items were ever queued, so the item at the front has index
    /// `pushed - items.len()`. Unbounded queues never have gaps and do not keep it.
    pushed: u64,
    /// Sparse gap marks: `(index, count)` — `count` events were lost just before the item with
    /// `index` (or, for the last mark, before the next item or the end). Strictly increasing.
    gaps: VecDeque<(u64, u64)>,
    /// Every event this subscription lost (dropped or superseded).
    lost: u64,
    /// Senders waiting for room (`Overflow::Wait`), woken when the reader takes an item.
    room: Vec<Waker>,
}

impl<T> QueueState<T> {
    fn mark_gap(&mut self, index: u64) {
        self.lost += 1;
        // Losses happen at the newest end: look at the last mark before searching.
        match self.gaps.back_mut() {
            None => return self.gaps.push_back((index, 1)),
            Some((at, count)) if *at == index => return *count += 1,
            Some((at, _)) if *at < index => return self.gaps.push_back((index, 1)),
            Some(_) => {}
        }
        match self.gaps.iter_mut().find(|(at, _)| *at == index) {
            Some((_, count)) => *count += 1,
            None => {
                let position = self.gaps.partition_point(|(at, _)| *at < index);
                self.gaps.insert(position, (index, 1));
            }
        }
    }

    /// Pops the front item with the number of events lost just before it.
    fn pop(&mut self) -> Option<(T, u64)> {
        let item = self.items.pop_front()?;
        if self.gaps.is_empty() {
            return Some((item, 0)); // always so for unbounded queues, whose `pushed` is not kept
        }
        let index = self.pushed - (self.items.len() as u64 + 1);
        Some((item, self.take_gap(index)))
    }

    fn take_gap(&mut self, index: u64) -> u64 {
        match self.gaps.front() {
            Some(&(at, count)) if at == index => {
                self.gaps.pop_front();
                count
            }
            _ => 0,
        }
    }

    fn take_room(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.room)
    }
}

fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl<T: Item> Queue<T> {
    pub(crate) fn new(id: u64, policy: Policy) -> Self {
        Self {
            id,
            topics: Mutex::new(Vec::new()),
            policy,
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waker: None,
                end: None,
                pushed: 0,
                gaps: VecDeque::new(),
                lost: 0,
                room: Vec::new(),
            }),
        }
    }

    /// Records that `topic` pushes into this queue (to detach from it later).
    pub(crate) fn attached_to(&self, topic: Weak<dyn AnyTopic>) {
        lock(&self.topics).push(topic);
    }

    /// Detaches from every topic it is attached to.
    fn detach(&self) {
        let topics = std::mem::take(&mut *lock(&self.topics));
        for topic in topics {
            if let Some(topic) = topic.upgrade() {
                topic.remove(self.id);
            }
        }
    }

    /// Offers `item` to the queue, applying its policy; called with the topic lock held.
    /// Returns `true` if the item was queued.
    pub(crate) fn push(&self, item: &T, wakers: &mut WakeList, drops: &mut DropLog) -> bool {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return false;
        }
        if self.policy.is_unbounded() {
            // The hot path: never full, never a gap, so no index to keep.
            state.items.push_back(item.clone());
            let waker = state.waker.take();
            drop(state);
            if let Some(waker) = waker {
                wakers.push(waker);
            }
            return true;
        }
        if state.items.len() >= self.policy.capacity {
            match self.policy.overflow {
                Overflow::DropNewest | Overflow::Wait => {
                    let index = state.pushed;
                    state.mark_gap(index);
                    drop(state);
                    drops.lost(&self.policy);
                    return false;
                }
                Overflow::DropOldest => {
                    let index = state.pushed - state.items.len() as u64;
                    let evicted = state.items.pop_front().expect("a full queue is not empty");
                    // Whatever was lost before the evicted item is now lost before the next.
                    let before = state.take_gap(index);
                    state.mark_gap(index + 1);
                    if before > 0 {
                        state.gaps.front_mut().expect("just marked").1 += before;
                    }
                    drops.evicted(evicted.erase());
                    drops.lost(&self.policy);
                }
            }
        }
        state.items.push_back(item.clone());
        state.pushed += 1;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            wakers.push(waker);
        }
        true
    }

    /// For `send_wait`: `true` if this queue can take one more event now (or does not care);
    /// otherwise registers `waker` to be woken when the reader makes room. Topic lock held.
    pub(crate) fn has_room(&self, waker: &Waker) -> bool {
        if self.policy.overflow != Overflow::Wait {
            return true;
        }
        let mut state = lock(&self.state);
        if state.end.is_some() || state.items.len() < self.policy.capacity {
            return true;
        }
        if !state.room.iter().any(|w| w.will_wake(waker)) {
            state.room.push(waker.clone());
        }
        false
    }

    /// Queues the retained events of a replaying subscription before it is attached (topic
    /// lock held). A bounded queue takes the newest that fit; the older ones were never sent to
    /// it, so they are not counted as lost.
    pub(crate) fn preload<'a>(&self, retained: impl ExactSizeIterator<Item = &'a T>)
    where
        T: 'a,
    {
        let skip = retained.len().saturating_sub(self.policy.capacity);
        let mut state = lock(&self.state);
        for item in retained.skip(skip) {
            state.items.push_back(item.clone());
            state.pushed += 1;
        }
    }

    /// Stops accepting events; the reader yields what is queued, then ends with `reason`.
    /// The first reason wins.
    pub(crate) fn end(&self, reason: EndReason) {
        let mut state = lock(&self.state);
        if state.end.is_none() {
            state.end = Some(reason);
        }
        let waker = state.waker.take();
        let room = state.take_room();
        drop(state);
        wake_all(waker.into_iter().chain(room));
    }
}

/// Something a scope can end when it exits: the subscriptions it created.
pub(crate) trait Endable: Send + Sync {
    /// Detaches from the topics and ends the queue.
    fn end_subscription(&self, reason: EndReason);
}

impl<T: Item> Endable for Queue<T> {
    fn end_subscription(&self, reason: EndReason) {
        self.detach();
        self.end(reason);
    }
}

/// Why [`Subscription::try_next`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TryNextError {
    /// Nothing is queued now; more may come (await `next()` to wait for it).
    Empty,
    /// The subscription has ended, for this reason, and everything it held was read.
    Ended(EndReason),
}

impl fmt::Display for TryNextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryNextError::Empty => f.write_str("no event is queued now"),
            TryNextError::Ended(reason) => write!(f, "the subscription ended: {reason}"),
        }
    }
}

impl std::error::Error for TryNextError {}

/// The reading half shared by [`Subscription`] and [`AnySubscription`].
pub(crate) struct Reader<T: Item> {
    queue: Option<Arc<Queue<T>>>,
    /// Items taken from the queue in one batch (unbounded subscriptions only; a bounded one
    /// takes one item at a time so that its capacity is exact).
    local: VecDeque<T>,
    end: Option<EndReason>,
    /// Events lost just before the item last returned (or before the end).
    missed: u64,
    /// `lost` as last seen, for a reader whose queue is gone.
    lost: u64,
}

impl<T: Item> Reader<T> {
    fn new(queue: Option<Arc<Queue<T>>>, end: Option<EndReason>) -> Self {
        Self {
            queue,
            local: VecDeque::new(),
            end,
            missed: 0,
            lost: 0,
        }
    }

    fn end_reason(&self) -> Option<EndReason> {
        self.end
    }

    fn missed(&self) -> u64 {
        self.missed
    }

    fn dropped(&self) -> u64 {
        match &self.queue {
            Some(queue) => lock(&queue.state).lost,
            None => self.lost,
        }
    }

    fn name(&self) -> Option<&str> {
        self.queue.as_ref()?.policy.name.as_deref()
    }

    fn len(&self) -> usize {
        self.local.len()
            + self
                .queue
                .as_ref()
                .map_or(0, |queue| lock(&queue.state).items.len())
    }

    fn try_next(&mut self) -> Result<T, TryNextError> {
        match self.poll_take(None) {
            Poll::Ready(Some(item)) => Ok(item),
            Poll::Ready(None) => Err(TryNextError::Ended(self.end.expect("ended"))),
            Poll::Pending => Err(TryNextError::Empty),
        }
    }

    fn drain(&mut self) -> Vec<T> {
        let mut out: Vec<T> = self.local.drain(..).collect();
        if let Some(queue) = &self.queue {
            let mut state = lock(&queue.state);
            while let Some((item, missed)) = state.pop() {
                self.missed = missed;
                out.push(item);
            }
            let room = state.take_room();
            drop(state);
            wake_all(room);
        }
        out
    }

    /// One step of reading: an item, nothing yet (registering `waker` if given), or the end.
    ///
    /// The fast path pops the private batch. Only unbounded queues fill it, and they never have
    /// gaps, so `missed` is already 0 there.
    #[inline]
    fn poll_take(&mut self, waker: Option<&Waker>) -> Poll<Option<T>> {
        match self.local.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None => self.poll_queue(waker),
        }
    }

    /// The slow path of [`poll_take`](Self::poll_take): one lock on the queue.
    #[inline(never)]
    fn poll_queue(&mut self, waker: Option<&Waker>) -> Poll<Option<T>> {
        let Some(queue) = &self.queue else {
            return match self.end {
                Some(_) => Poll::Ready(None),
                None => Poll::Pending,
            };
        };
        let mut state = lock(&queue.state);
        if queue.policy.is_unbounded() && state.gaps.is_empty() {
            if !state.items.is_empty() {
                // Take the whole batch with one lock; capacities are reused.
                std::mem::swap(&mut state.items, &mut self.local);
                state.pushed = 0;
                drop(state);
                self.missed = 0;
                return Poll::Ready(self.local.pop_front());
            }
        } else if let Some((item, missed)) = state.pop() {
            let room = state.take_room();
            drop(state);
            wake_all(room);
            self.missed = missed;
            return Poll::Ready(Some(item));
        }
        if let Some(reason) = state.end {
            if queue.policy.linked && reason.is_abnormal() && crate::spawn::cancel_current_task() {
                // Linked: the consuming task is cancelled rather than shown the end.
                return Poll::Pending;
            }
            // Events lost after the last item count as lost before the end.
            self.missed = state.gaps.drain(..).map(|(_, count)| count).sum();
            self.lost = state.lost;
            drop(state);
            self.end = Some(reason);
            // Ended and drained: let go of the queue (and detach if still attached).
            if let Some(queue) = self.queue.take() {
                queue.end_subscription(reason);
            }
            return Poll::Ready(None);
        }
        if let Some(waker) = waker {
            match &state.waker {
                Some(current) if current.will_wake(waker) => {}
                _ => state.waker = Some(waker.clone()),
            }
        }
        Poll::Pending
    }

    fn is_terminated(&self) -> bool {
        self.queue.is_none() && self.local.is_empty()
    }
}

impl<T: Item> Drop for Reader<T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.detach();
            // Senders waiting for room in this queue must not wait for a reader that is gone.
            let room = lock(&queue.state).take_room();
            wake_all(room);
        }
    }
}

/// The methods both subscription types offer, delegated to their [`Reader`].
macro_rules! reading_methods {
    ($item:ty) => {
        /// Why the stream ended, once it has returned `None`; `None` while it is live.
        pub fn end_reason(&self) -> Option<EndReason> {
            self.reader.end_reason()
        }

        /// How many events this subscription lost just before the event most recently returned
        /// (or, once the stream has ended, just before the end). Always 0 for the default
        /// lossless subscription.
        ///
        /// Together with [`dropped`](Self::dropped) this makes every gap visible: a reader that
        /// checks `missed()` after each event knows exactly where events are missing and how
        /// many.
        pub fn missed(&self) -> u64 {
            self.reader.missed()
        }

        /// How many events this subscription has lost so far (dropped when full, or
        /// superseded under keep-latest).
        pub fn dropped(&self) -> u64 {
            self.reader.dropped()
        }

        /// The name given with [`SubscriptionBuilder::name`](crate::SubscriptionBuilder::name).
        pub fn name(&self) -> Option<&str> {
            self.reader.name()
        }

        /// How many events are waiting to be read.
        pub fn len(&self) -> usize {
            self.reader.len()
        }

        /// `true` when no event is waiting to be read.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The next event if one is queued now, without waiting.
        ///
        /// # Errors
        ///
        /// [`TryNextError::Empty`] when nothing is queued (await
        /// [`next`](futures::StreamExt::next) to wait), [`TryNextError::Ended`] once the
        /// subscription has ended and was read to the end.
        pub fn try_next(&mut self) -> Result<$item, TryNextError> {
            self.reader.try_next()
        }

        /// Takes every event queued now (a snapshot), oldest first, without waiting. To wait
        /// for more, await the stream. [`missed`](Self::missed) afterwards reports what was lost
        /// just before the last event taken; use [`try_next`](Self::try_next) to see each gap.
        pub fn drain(&mut self) -> Vec<$item> {
            self.reader.drain()
        }
    };
}

/// A stream of every `E` sent on the bus after the subscription was made.
///
/// Created by [`ctx::subscribe`](crate::ctx::subscribe). Items are [`Envelope<E>`], which
/// dereference to `E`.
///
/// # Delivery
///
/// Unbounded and lossless: a slow subscriber lags (its queue grows), it never loses an event and
/// never slows the sender. Every event sent after `subscribe()` returned is queued, even before
/// the first poll, in the bus's one order for `E`.
///
/// # End of stream
///
/// The stream ends (`None`) after yielding everything it holds when the scope that created it
/// finishes its body, fails or is cancelled, or when the bus closes.
/// [`Subscription::end_reason`] says which. Dropping the subscription unsubscribes at once.
///
/// # Cancel safety
///
/// `next()` is cancel-safe: an event is removed from the subscription only when it is returned,
/// so dropping a pending `next()` future loses nothing.
///
/// ```
/// use futures::StreamExt;
/// use scopebus::ctx;
///
/// struct Tick(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let total = ctx::scope("app").run(async {
///     let mut ticks = ctx::subscribe::<Tick>();
///     let sum = ctx::spawn(async move {
///         let mut sum = 0;
///         while let Some(tick) = ticks.next().await {
///             sum += tick.0;
///         }
///         sum // the loop ends when the scope's body is done
///     });
///     for i in 1..=3 {
///         ctx::send(Tick(i));
///     }
///     sum
/// }).await;
/// assert_eq!(total.await.unwrap(), 6);
/// # }
/// ```
pub struct Subscription<E: Send + Sync + 'static> {
    reader: Feed<E>,
}

/// Where a typed subscription reads from: the type's shared log (default subscriptions), the
/// type's latest cell (keep-latest) or its own queue (a bounded policy).
enum Feed<E: Send + Sync + 'static> {
    Queue(Reader<Envelope<E>>),
    Log(LogReader<E>),
    Latest(LatestReader<E>),
}

impl<E: Send + Sync + 'static> Feed<E> {
    fn end_reason(&self) -> Option<EndReason> {
        match self {
            Feed::Queue(reader) => reader.end_reason(),
            Feed::Log(_) | Feed::Latest(_) => None,
        }
    }

    fn missed(&self) -> u64 {
        match self {
            Feed::Queue(reader) => reader.missed(),
            Feed::Log(_) => 0, // lossless
            Feed::Latest(reader) => reader.missed(),
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Feed::Queue(reader) => reader.dropped(),
            Feed::Log(_) => 0,
            Feed::Latest(reader) => reader.dropped(),
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Feed::Queue(reader) => reader.name(),
            Feed::Log(reader) => reader.cursor().name.as_deref(),
            Feed::Latest(reader) => reader.cursor().name.as_deref(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Feed::Queue(reader) => reader.len(),
            Feed::Log(reader) => reader.len(),
            Feed::Latest(reader) => reader.len(),
        }
    }

    fn try_next(&mut self) -> Result<Envelope<E>, TryNextError> {
        match self.poll_take(None) {
            Poll::Ready(Some(item)) => Ok(item),
            Poll::Ready(None) => Err(TryNextError::Ended(self.end_reason().expect("ended"))),
            Poll::Pending => Err(TryNextError::Empty),
        }
    }

    fn drain(&mut self) -> Vec<Envelope<E>> {
        match self {
            Feed::Queue(reader) => reader.drain(),
            Feed::Log(_) | Feed::Latest(_) => {
                let mut out = Vec::new();
                while let Ok(item) = self.try_next() {
                    out.push(item);
                }
                out
            }
        }
    }

    #[inline]
    fn poll_take(&mut self, waker: Option<&Waker>) -> Poll<Option<Envelope<E>>> {
        let (step, linked) = match self {
            Feed::Queue(reader) => return reader.poll_take(waker),
            Feed::Log(reader) => (reader.poll_take(waker), reader.cursor().linked),
            Feed::Latest(reader) => (reader.poll_take(waker), reader.cursor().linked),
        };
        match step {
            Poll::Ready(Ok(item)) => Poll::Ready(Some(item)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(reason)) => {
                if linked && reason.is_abnormal() && crate::spawn::cancel_current_task() {
                    // Linked: the consuming task is cancelled rather than shown the end.
                    return Poll::Pending;
                }
                // Ended and read to the end: let go of the log or cell (this detaches the
                // reader), keeping what the subscription reports.
                let mut ended = Reader::new(None, Some(reason));
                if let Feed::Latest(reader) = self {
                    ended.lost = reader.dropped();
                }
                *self = Feed::Queue(ended);
                Poll::Ready(None)
            }
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            Feed::Queue(reader) => reader.is_terminated(),
            Feed::Log(_) | Feed::Latest(_) => false,
        }
    }
}

impl<E: Send + Sync + 'static> Subscription<E> {
    pub(crate) fn new(queue: Arc<Queue<Envelope<E>>>) -> Self {
        Self {
            reader: Feed::Queue(Reader::new(Some(queue), None)),
        }
    }

    /// A default subscription, reading the type's shared log.
    pub(crate) fn from_log(reader: LogReader<E>) -> Self {
        Self {
            reader: Feed::Log(reader),
        }
    }

    /// A typed keep-latest subscription, reading the type's latest cell.
    pub(crate) fn from_latest(reader: LatestReader<E>) -> Self {
        Self {
            reader: Feed::Latest(reader),
        }
    }

    /// A subscription that has already ended (closed bus, finished scope).
    pub(crate) fn ended(reason: EndReason) -> Self {
        Self {
            reader: Feed::Queue(Reader::new(None, Some(reason))),
        }
    }

    reading_methods!(Envelope<E>);
}

impl<E: Send + Sync + 'static> Stream for Subscription<E> {
    type Item = Envelope<E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope<E>>> {
        self.get_mut().reader.poll_take(Some(cx.waker()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.reader {
            Feed::Queue(reader) => {
                let known = reader.local.len();
                (known, reader.queue.is_none().then_some(known))
            }
            Feed::Log(_) | Feed::Latest(_) => (0, None),
        }
    }
}

impl<E: Send + Sync + 'static> FusedStream for Subscription<E> {
    fn is_terminated(&self) -> bool {
        self.reader.is_terminated()
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &std::any::type_name::<E>())
            .field("name", &self.name())
            .field("queued", &self.len())
            .field("end_reason", &self.reader.end_reason())
            .finish()
    }
}

/// A stream over several event types, or over every type of a bus (a tap), in one order.
///
/// Created by [`ctx::subscribe_many`](crate::ctx::subscribe_many) or
/// [`ctx::tap`](crate::ctx::tap). Items are [`AnyEnvelope`]s: the same shared allocation as the
/// typed envelopes, with [`downcast`](AnyEnvelope::downcast) to get the event back.
///
/// # Order
///
/// Items arrive in bus sequence order: `seq()` strictly increases along the stream, across
/// types. Each type's events keep that type's one order (the order every typed subscription
/// sees). To guarantee this, a send of a type that has a multi-type subscriber or a tap takes a
/// bus-wide lock for the fan-out; types nobody taps pay nothing.
///
/// Delivery options, end of stream, gaps and cancel safety are those of [`Subscription`].
pub struct AnySubscription {
    reader: Reader<AnyEnvelope>,
}

impl AnySubscription {
    pub(crate) fn new(queue: Arc<Queue<AnyEnvelope>>) -> Self {
        Self {
            reader: Reader::new(Some(queue), None),
        }
    }

    pub(crate) fn ended(reason: EndReason) -> Self {
        Self {
            reader: Reader::new(None, Some(reason)),
        }
    }

    reading_methods!(AnyEnvelope);
}

impl Stream for AnySubscription {
    type Item = AnyEnvelope;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AnyEnvelope>> {
        self.get_mut().reader.poll_take(Some(cx.waker()))
    }
}

impl FusedStream for AnySubscription {
    fn is_terminated(&self) -> bool {
        self.reader.is_terminated()
    }
}

impl fmt::Debug for AnySubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnySubscription")
            .field("name", &self.name())
            .field("queued", &self.len())
            .field("end_reason", &self.reader.end)
            .finish()
    }
}
