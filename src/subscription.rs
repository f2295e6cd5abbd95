//! [`Subscription<E>`]: one subscriber's queue on a bus, read as a `Stream`.
//!
//! Design: every subscription owns a queue ([`Queue`]) that the topic of its type pushes
//! envelopes into. Per-subscription queues (rather than one shared log per type) let each
//! subscriber choose its own delivery policy and let one queue be fed by several types later,
//! while the topic lock held during fan-out keeps one total order per bus and type.
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
//! Lock order: topic → queue. A queue lock is held only for a push, a swap or a flag change.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;

use crate::delivery::{DropLog, Overflow, Policy};
use crate::event::Envelope;
use crate::sync::{WakeList, lock};
use crate::topic::Topic;

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
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::ScopeFinished => "its scope finished",
            EndReason::ScopeFailed => "its scope failed",
            EndReason::ScopeCancelled => "its scope was cancelled",
            EndReason::BusClosed => "the bus is closed",
        })
    }
}

/// The shared half of a subscription: what the topic pushes into.
pub(crate) struct Queue<E> {
    pub(crate) id: u64,
    topic: Weak<Topic<E>>,
    pub(crate) policy: Policy,
    state: Mutex<QueueState<E>>,
}

struct QueueState<E> {
    items: VecDeque<Envelope<E>>,
    waker: Option<Waker>,
    end: Option<EndReason>,
    /// How many envelopes were ever queued: the item at the front has index
    /// `pushed - items.len()`.
    pushed: u64,
    /// Sparse gap marks: `(index, count)` — `count` events were lost just before the item with
    /// `index` (or, for the last mark, before the next item or the end). Strictly increasing.
    gaps: VecDeque<(u64, u64)>,
    /// Every event this subscription lost (dropped or superseded).
    lost: u64,
    /// Senders waiting for room (`Overflow::Wait`), woken when the reader takes an item.
    room: Vec<Waker>,
}

impl<E> QueueState<E> {
    fn mark_gap(&mut self, index: u64) {
        self.lost += 1;
        match self.gaps.iter_mut().find(|(at, _)| *at == index) {
            Some((_, count)) => *count += 1,
            None => {
                let position = self.gaps.partition_point(|(at, _)| *at < index);
                self.gaps.insert(position, (index, 1));
            }
        }
    }

    /// Pops the front item with the number of events lost just before it.
    fn pop(&mut self) -> Option<(Envelope<E>, u64)> {
        let index = self.pushed - self.items.len() as u64;
        let item = self.items.pop_front()?;
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
}

impl<E: Send + Sync + 'static> Queue<E> {
    pub(crate) fn new(id: u64, topic: Weak<Topic<E>>, policy: Policy) -> Self {
        Self {
            id,
            topic,
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

    /// Offers `envelope` to the queue, applying its policy; called with the topic lock held.
    /// Returns `true` if the envelope was queued.
    pub(crate) fn push(
        &self,
        envelope: &Envelope<E>,
        wakers: &mut WakeList,
        drops: &mut DropLog<E>,
    ) -> bool {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return false;
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
                    drops.evicted.push(evicted);
                    drops.lost(&self.policy);
                }
            }
        }
        state.items.push_back(envelope.clone());
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
    pub(crate) fn preload(&self, retained: &VecDeque<Envelope<E>>) {
        let skip = retained.len().saturating_sub(self.policy.capacity);
        let mut state = lock(&self.state);
        for envelope in retained.iter().skip(skip) {
            state.items.push_back(envelope.clone());
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
        let room = std::mem::take(&mut state.room);
        drop(state);
        for waker in waker.into_iter().chain(room) {
            waker.wake();
        }
    }
}

/// Something a scope can end when it exits: the subscriptions it created.
pub(crate) trait Endable: Send + Sync {
    /// Detaches from the topic and ends the queue.
    fn end_subscription(&self, reason: EndReason);
}

impl<E: Send + Sync + 'static> Endable for Queue<E> {
    fn end_subscription(&self, reason: EndReason) {
        if let Some(topic) = self.topic.upgrade() {
            topic.remove(self.id);
        }
        self.end(reason);
    }
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
    queue: Option<Arc<Queue<E>>>,
    /// Items taken from the queue in one batch (unbounded subscriptions only; a bounded one
    /// takes one item at a time so that its capacity is exact).
    local: VecDeque<Envelope<E>>,
    end: Option<EndReason>,
    /// Events lost just before the item last returned (or before the end).
    missed: u64,
    /// `lost` as last seen, for a subscription whose queue is gone.
    lost: u64,
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

enum Taken<E> {
    Item(Envelope<E>),
    Empty,
    Ended(EndReason),
}

impl<E: Send + Sync + 'static> Subscription<E> {
    pub(crate) fn new(queue: Arc<Queue<E>>) -> Self {
        Self {
            queue: Some(queue),
            local: VecDeque::new(),
            end: None,
            missed: 0,
            lost: 0,
        }
    }

    /// A subscription that has already ended (closed bus, finished scope).
    pub(crate) fn ended(reason: EndReason) -> Self {
        Self {
            queue: None,
            local: VecDeque::new(),
            end: Some(reason),
            missed: 0,
            lost: 0,
        }
    }

    /// Why the stream ended, once it has returned `None`; `None` while it is live.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end
    }

    /// How many events this subscription lost just before the event most recently returned
    /// (or, once the stream has ended, just before the end). Always 0 for the default lossless
    /// subscription.
    ///
    /// Together with [`dropped`](Self::dropped) this makes every gap visible: a reader that
    /// checks `missed()` after each event knows exactly where events are missing and how many.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// How many events this subscription has lost so far (dropped when full, or superseded
    /// under keep-latest).
    pub fn dropped(&self) -> u64 {
        match &self.queue {
            Some(queue) => lock(&queue.state).lost,
            None => self.lost,
        }
    }

    /// The name given with [`SubscriptionBuilder::name`](crate::SubscriptionBuilder::name).
    pub fn name(&self) -> Option<&str> {
        self.queue.as_ref()?.policy.name.as_deref()
    }

    /// How many events are waiting to be read.
    pub fn len(&self) -> usize {
        self.local.len()
            + self
                .queue
                .as_ref()
                .map_or(0, |queue| lock(&queue.state).items.len())
    }

    /// `true` when no event is waiting to be read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next event if one is queued now, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryNextError::Empty`] when nothing is queued (await [`next`](futures::StreamExt::next)
    /// to wait), [`TryNextError::Ended`] once the subscription has ended and was read to the end.
    pub fn try_next(&mut self) -> Result<Envelope<E>, TryNextError> {
        match self.take(None) {
            Taken::Item(envelope) => Ok(envelope),
            Taken::Empty => Err(TryNextError::Empty),
            Taken::Ended(reason) => Err(TryNextError::Ended(reason)),
        }
    }

    /// Takes every event queued now (a snapshot), oldest first, without waiting. To wait for
    /// more, await the stream. [`missed`](Self::missed) afterwards reports what was lost just
    /// before the last event taken; use [`try_next`](Self::try_next) to see each gap.
    pub fn drain(&mut self) -> Vec<Envelope<E>> {
        let mut out: Vec<Envelope<E>> = self.local.drain(..).collect();
        if let Some(queue) = &self.queue {
            let mut state = lock(&queue.state);
            while let Some((item, missed)) = state.pop() {
                self.missed = missed;
                out.push(item);
            }
            let room = std::mem::take(&mut state.room);
            drop(state);
            for waker in room {
                waker.wake();
            }
        }
        out
    }

    /// One step of reading: an item, nothing yet (registering `waker` if given), or the end.
    fn take(&mut self, waker: Option<&Waker>) -> Taken<E> {
        if let Some(envelope) = self.local.pop_front() {
            self.missed = 0;
            return Taken::Item(envelope);
        }
        let Some(queue) = &self.queue else {
            return match self.end {
                Some(reason) => Taken::Ended(reason),
                None => Taken::Empty,
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
                return Taken::Item(self.local.pop_front().expect("swapped a non-empty batch"));
            }
        } else if let Some((item, missed)) = state.pop() {
            let room = std::mem::take(&mut state.room);
            drop(state);
            for waker in room {
                waker.wake();
            }
            self.missed = missed;
            return Taken::Item(item);
        }
        if let Some(reason) = state.end {
            // Events lost after the last item count as lost before the end.
            self.missed = state.gaps.drain(..).map(|(_, count)| count).sum();
            self.lost = state.lost;
            drop(state);
            self.end = Some(reason);
            // Ended and drained: let go of the queue (and unsubscribe if still attached).
            if let Some(queue) = self.queue.take() {
                queue.end_subscription(reason);
            }
            return Taken::Ended(reason);
        }
        if let Some(waker) = waker {
            match &state.waker {
                Some(current) if current.will_wake(waker) => {}
                _ => state.waker = Some(waker.clone()),
            }
        }
        Taken::Empty
    }
}

impl<E: Send + Sync + 'static> Stream for Subscription<E> {
    type Item = Envelope<E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope<E>>> {
        match self.get_mut().take(Some(cx.waker())) {
            Taken::Item(envelope) => Poll::Ready(Some(envelope)),
            Taken::Ended(_) => Poll::Ready(None),
            Taken::Empty => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let known = self.local.len();
        (
            known,
            if self.queue.is_none() {
                Some(known)
            } else {
                None
            },
        )
    }
}

impl<E: Send + Sync + 'static> FusedStream for Subscription<E> {
    fn is_terminated(&self) -> bool {
        self.queue.is_none() && self.local.is_empty()
    }
}

impl<E: Send + Sync + 'static> Drop for Subscription<E> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            if let Some(topic) = queue.topic.upgrade() {
                topic.remove(queue.id);
            }
            // Senders waiting for room in this queue must not wait for a reader that is gone.
            let room = std::mem::take(&mut lock(&queue.state).room);
            for waker in room {
                waker.wake();
            }
        }
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &std::any::type_name::<E>())
            .field("queued", &self.len())
            .field("end_reason", &self.end)
            .finish()
    }
}
