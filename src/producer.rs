//! Owned events: [`ctx::register`](crate::ctx::register), [`Producer`] and its [`Demand`].
//!
//! A registration makes one event type *owned* on one bus: only its producer handles may send
//! it (unless it is `open`). The registration lives in the type's topic (`topic.rs`); the
//! [`Producer`] handles share one `Registration`, whose drop (the last handle) unregisters. The
//! owner scope keeps a weak reference and ends the registration when it exits.
//!
//! Invariants:
//! - A registration ends once, with the first reason: `unregister()` (`Unregistered`), the last
//!   handle dropped (`Unregistered`, or `OwnerFailed` / `OwnerCancelled` if the owner scope is
//!   failing or being cancelled then, or a panic is unwinding — a producer dropped by a crash
//!   reports the crash), or the
//!   owner scope's exit (`OwnerFinished`, `OwnerFailed`, `OwnerCancelled`). After that every handle's send fails with `Unregistered` and the type
//!   can be registered again.
//! - Producer sends carry the owner scope as their origin, whichever clone sent: subscribers
//!   cannot tell delegates apart.
//! - A demand watcher receives, in order, exactly the 0 ↔ non-zero transitions of the type's
//!   demand that happen after it was created (plus `Started` first if there was demand then),
//!   and ends when the registration ends or the bus closes. Its queue alternates
//!   `Started`/`Stopped`, so an unread watcher holds at most what its producer's subscribers
//!   did, and never loses a transition.
//!
//! Lock order: topic → watcher (a watcher's lock is a leaf).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;

use crate::bus::Bus;
use crate::error::{RegisterError, SendError};
use crate::scope::{Frame, ScopeInfo};
use crate::sent::Sent;
use crate::subscription::EndReason;
use crate::sync::lock;
use crate::topic::{Sender, Topic};

/// How to register an owned event type, for [`ctx::register`](crate::ctx::register).
///
/// ```
/// use scopebus::RegisterOptions;
///
/// let options = RegisterOptions::new().open().retain(2);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "options do nothing until passed to `ctx::register`"]
pub struct RegisterOptions {
    open: bool,
    retain: usize,
}

impl RegisterOptions {
    /// Default options: closed to plain sends, no catch-up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets anyone send the type with a plain `ctx::send` too. The registration still gives
    /// demand, catch-up and an end of stream with a reason.
    pub fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// Catch-up (Ergo's `Buffer`): keep the last `count` events, and give them, oldest first, to
    /// every new subscription of the type before live events — atomically, with no gap and no
    /// duplicate. The retained events are dropped when the registration ends.
    pub fn retain(mut self, count: usize) -> Self {
        self.retain = count;
        self
    }
}

/// What a scope ends when it exits: the registrations made in it.
pub(crate) trait Registered: Send + Sync {
    fn end(&self, reason: EndReason);
}

/// One registration, shared by all the [`Producer`] handles of it.
struct Registration<E: Send + Sync + 'static> {
    id: u64,
    bus: Arc<Bus>,
    topic: Arc<Topic<E>>,
    owner: Arc<ScopeInfo>,
    /// The owner scope, to tell a plain unregister from a producer dropped by a crash.
    frame: Weak<Frame>,
}

impl<E: Send + Sync + 'static> Registered for Registration<E> {
    fn end(&self, reason: EndReason) {
        self.topic.end_registration(self.id, reason);
    }
}

impl<E: Send + Sync + 'static> Drop for Registration<E> {
    fn drop(&mut self) {
        let reason = self
            .frame
            .upgrade()
            .map_or(EndReason::Unregistered, |frame| frame.unregister_reason());
        self.topic.end_registration(self.id, reason);
    }
}

/// Registers `E` as owned on `frame`'s bus (see [`ctx::register`](crate::ctx::register)).
pub(crate) fn register<E: Send + Sync + 'static>(
    frame: &Arc<Frame>,
    options: RegisterOptions,
) -> Result<Producer<E>, RegisterError> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let topic = frame.bus.topic::<E>();
    topic.register(id, options.open, options.retain, frame.info())?;
    let registration = Arc::new(Registration {
        id,
        bus: frame.bus.clone(),
        topic,
        owner: frame.info().clone(),
        frame: Arc::downgrade(frame),
    });
    let weak = Arc::downgrade(&registration);
    if !frame.own_registration(weak) {
        // The scope ended its registrations meanwhile: dropping ours unregisters it.
        return Err(RegisterError::ScopeFinished);
    }
    Ok(Producer { registration })
}

/// The capability to send an owned event type `E`, returned by
/// [`ctx::register`](crate::ctx::register).
///
/// Cloning a producer delegates: every clone sends as the registration (the envelopes carry the
/// owner scope as their origin), so subscribers cannot tell which clone sent. A producer is
/// usable from anywhere — another scope, a plain thread — while its registration lasts.
///
/// The registration ends, and every subscription of `E` attached then yields what it holds and
/// ends with a reason, when
/// - [`unregister`](Producer::unregister) is called, or the last handle is dropped
///   ([`EndReason::Unregistered`] — but if a panic is unwinding, or the owner scope is failing
///   or being cancelled, when the last handle goes, [`OwnerFailed`](EndReason::OwnerFailed) or
///   [`OwnerCancelled`](EndReason::OwnerCancelled): a producer dropped by a crash reports it);
/// - the owner scope (where `register` was called) exits, after its tasks have stopped
///   ([`EndReason::OwnerFinished`], [`OwnerFailed`](EndReason::OwnerFailed),
///   [`OwnerCancelled`](EndReason::OwnerCancelled)).
///
/// ```
/// use futures::StreamExt;
/// use scopebus::{ctx, EndReason, RegisterOptions};
///
/// struct Price(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("market").run(async {
///     let feed = ctx::register::<Price>(RegisterOptions::new()).unwrap();
///     let mut prices = ctx::subscribe::<Price>();
///     assert!(ctx::try_send(Price(1)).is_err()); // only the producer may send `Price`
///     feed.send(Price(2)).unwrap();
///     feed.unregister();
///     assert_eq!(prices.next().await.map(|p| p.0), Some(2)); // what it held, then the end
///     assert!(prices.next().await.is_none());
///     assert_eq!(prices.end_reason(), Some(EndReason::Unregistered));
/// }).await;
/// # }
/// ```
pub struct Producer<E: Send + Sync + 'static> {
    registration: Arc<Registration<E>>,
}

impl<E: Send + Sync + 'static> Producer<E> {
    /// Publishes `event` on the registration's bus; never blocks.
    ///
    /// # Errors
    ///
    /// [`SendErrorKind::Unregistered`](crate::SendErrorKind::Unregistered) once the
    /// registration has ended, [`SendErrorKind::Closed`](crate::SendErrorKind::Closed) when the
    /// bus is closed. The event is handed back.
    pub fn send(&self, event: E) -> Result<Sent, SendError<E>> {
        let registration = &*self.registration;
        registration.bus.send_as(
            &registration.owner,
            event,
            Sender::Producer(registration.id),
            Some(&registration.topic),
        )
    }

    /// Publishes `event` like [`send`](Self::send), first waiting for room in every
    /// subscription whose policy is [`Overflow::Wait`](crate::Overflow::Wait) (and in a paused
    /// bus's held buffer), like [`ctx::send_wait`](crate::ctx::send_wait). Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), also when the registration ends or the bus closes while
    /// waiting.
    pub fn send_wait(
        &self,
        event: E,
    ) -> impl Future<Output = Result<Sent, SendError<E>>> + Send + 'static {
        let registration = self.registration.clone();
        crate::bus::send_wait(event, move |event, waker| {
            registration.bus.try_send_with_room(
                &registration.owner,
                event,
                waker,
                Sender::Producer(registration.id),
                Some(&registration.topic),
            )
        })
    }

    /// Ends the registration for every handle (see the type's documentation).
    pub fn unregister(self) {
        self.registration.end(EndReason::Unregistered);
    }

    /// `true` while the registration lasts.
    pub fn is_registered(&self) -> bool {
        self.registration.topic.is_owned_by(self.registration.id)
    }

    /// How many subscriptions want `E` now: typed subscriptions and multi-type subscriptions
    /// that name it. Taps, which watch every type, are not demand.
    pub fn subscribers(&self) -> usize {
        self.registration.topic.demand()
    }

    /// Watches the demand for `E`: a stream of [`DemandChange`]s — exactly one
    /// [`Started`](DemandChange::Started) each time the demand goes from 0 to 1 and exactly one
    /// [`Stopped`](DemandChange::Stopped) each time it goes back to 0, whether the last
    /// subscription was dropped, its scope ended or its task panicked. If there is demand when
    /// the watcher is made, its first item is `Started`. The stream ends when the registration
    /// ends or the bus closes.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use scopebus::{ctx, DemandChange, RegisterOptions};
    ///
    /// struct Frame;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// ctx::scope("camera").run(async {
    ///     let camera = ctx::register::<Frame>(RegisterOptions::new()).unwrap();
    ///     let mut demand = camera.demand();
    ///     let viewer = ctx::subscribe::<Frame>();
    ///     assert_eq!(demand.next().await, Some(DemandChange::Started));
    ///     drop(viewer);
    ///     assert_eq!(demand.next().await, Some(DemandChange::Stopped));
    /// }).await;
    /// # }
    /// ```
    pub fn demand(&self) -> Demand {
        let registration = &*self.registration;
        Demand {
            queue: registration.topic.watch_demand(registration.id),
        }
    }

    /// The scope that registered `E` (the origin of every event this producer sends).
    pub fn owner(&self) -> &ScopeInfo {
        &self.registration.owner
    }
}

impl<E: Send + Sync + 'static> Clone for Producer<E> {
    fn clone(&self) -> Self {
        Self {
            registration: self.registration.clone(),
        }
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Producer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("event", &std::any::type_name::<E>())
            .field("owner", &self.registration.owner)
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// A change of a producer's demand (see [`Producer::demand`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemandChange {
    /// The first subscription appeared: someone wants the events.
    Started,
    /// The last subscription went away: nobody wants them any more.
    Stopped,
}

/// The shared queue of one demand watcher.
pub(crate) struct DemandQueue {
    state: Mutex<DemandState>,
}

struct DemandState {
    changes: VecDeque<DemandChange>,
    waker: Option<Waker>,
    ended: bool,
}

impl DemandQueue {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(DemandState {
                changes: VecDeque::new(),
                waker: None,
                ended: false,
            }),
        }
    }

    /// Queues `change`; returns the waker to wake once the caller's locks are released.
    pub(crate) fn push(&self, change: DemandChange) -> Option<Waker> {
        let mut state = lock(&self.state);
        if state.ended {
            return None;
        }
        state.changes.push_back(change);
        state.waker.take()
    }

    /// Ends the stream after what it holds. Called with no topic lock held.
    pub(crate) fn end(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.ended = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The demand of a [`Producer`], as a stream of [`DemandChange`]s (see [`Producer::demand`]).
///
/// Reading it is cancel-safe: a change is removed only when it is returned.
pub struct Demand {
    /// `None` when made for a registration that had already ended.
    queue: Option<Arc<DemandQueue>>,
}

impl Stream for Demand {
    type Item = DemandChange;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DemandChange>> {
        let this = self.get_mut();
        let Some(queue) = &this.queue else {
            return Poll::Ready(None);
        };
        let mut state = lock(&queue.state);
        if let Some(change) = state.changes.pop_front() {
            return Poll::Ready(Some(change));
        }
        if state.ended {
            drop(state);
            this.queue = None;
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl FusedStream for Demand {
    fn is_terminated(&self) -> bool {
        self.queue.is_none()
    }
}

impl fmt::Debug for Demand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demand")
            .field("ended", &self.queue.is_none())
            .finish()
    }
}
