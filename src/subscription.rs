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
//!
//! Lock order: topic → queue. A queue lock is held only for a push, a swap or a flag change.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;

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
    state: Mutex<QueueState<E>>,
}

struct QueueState<E> {
    items: VecDeque<Envelope<E>>,
    waker: Option<Waker>,
    end: Option<EndReason>,
}

impl<E: Send + Sync + 'static> Queue<E> {
    pub(crate) fn new(id: u64, topic: Weak<Topic<E>>) -> Self {
        Self {
            id,
            topic,
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waker: None,
                end: None,
            }),
        }
    }

    /// Queues `envelope` unless the queue has ended; called with the topic lock held.
    pub(crate) fn push(&self, envelope: &Envelope<E>, wakers: &mut WakeList) -> bool {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return false;
        }
        state.items.push_back(envelope.clone());
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            wakers.push(waker);
        }
        true
    }

    /// Stops accepting events; the reader yields what is queued, then ends with `reason`.
    /// The first reason wins.
    pub(crate) fn end(&self, reason: EndReason) {
        let mut state = lock(&self.state);
        if state.end.is_none() {
            state.end = Some(reason);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
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
    local: VecDeque<Envelope<E>>,
    end: Option<EndReason>,
}

impl<E: Send + Sync + 'static> Subscription<E> {
    pub(crate) fn new(queue: Arc<Queue<E>>) -> Self {
        Self {
            queue: Some(queue),
            local: VecDeque::new(),
            end: None,
        }
    }

    /// A subscription that has already ended (closed bus, finished scope).
    pub(crate) fn ended(reason: EndReason) -> Self {
        Self {
            queue: None,
            local: VecDeque::new(),
            end: Some(reason),
        }
    }

    /// Why the stream ended, once it has returned `None`; `None` while it is live.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end
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
}

impl<E: Send + Sync + 'static> Stream for Subscription<E> {
    type Item = Envelope<E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope<E>>> {
        let this = self.get_mut();
        if let Some(envelope) = this.local.pop_front() {
            return Poll::Ready(Some(envelope));
        }
        let Some(queue) = &this.queue else {
            return Poll::Ready(None);
        };
        let mut state = lock(&queue.state);
        if !state.items.is_empty() {
            std::mem::swap(&mut state.items, &mut this.local);
            drop(state);
            return Poll::Ready(this.local.pop_front());
        }
        if let Some(reason) = state.end {
            drop(state);
            this.end = Some(reason);
            // Ended and drained: let go of the queue (and unsubscribe if still attached).
            if let Some(queue) = this.queue.take() {
                queue.end_subscription(reason);
            }
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (
            self.local.len(),
            if self.queue.is_none() {
                Some(self.local.len())
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
        if let Some(queue) = self.queue.take()
            && let Some(topic) = queue.topic.upgrade()
        {
            topic.remove(queue.id);
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
