//! What a subscriber receives: [`Envelope<E>`], a shared handle to one sent event.
//!
//! Invariants:
//! - One allocation per send: the payload and its envelope (sequence, send time, origin) live in
//!   one `Arc`, shared by every subscription that receives it. The payload is never cloned or
//!   modified after the send.
//! - `seq` is assigned while the topic lock is held, so within one bus and type the sequence
//!   order is the delivery order.

use std::any::{Any, TypeId};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::scope::ScopeInfo;

/// One event as delivered to a subscription: a cheap shared handle that dereferences to the
/// event and carries its envelope.
///
/// Cloning an `Envelope` clones an `Arc`, never the event. Every subscription that received the
/// same send holds the same allocation.
///
/// ```
/// use futures::StreamExt;
/// use scopebus::ctx;
///
/// struct Temperature(f32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("sensors").run(async {
///     let mut readings = ctx::subscribe::<Temperature>();
///     ctx::send(Temperature(21.5));
///     let reading = readings.next().await.unwrap();
///     assert_eq!(reading.0, 21.5); // `Deref` to the event
///     assert_eq!(reading.origin().name(), "sensors");
///     println!("#{} sent at {:?}", reading.seq(), reading.sent_at());
/// }).await;
/// # }
/// ```
pub struct Envelope<E> {
    inner: Arc<Inner<E>>,
}

/// The shared allocation behind an [`Envelope`] (what a log slot holds, `slot.rs`).
pub(crate) struct Inner<E> {
    /// Written once, before the envelope is shared (a plain store: publishing the envelope to
    /// other threads goes through a lock or a `OnceLock`, which orders it).
    seq: AtomicU64,
    sent_at: SystemTime,
    origin: Arc<ScopeInfo>,
    event: E,
}

/// The envelope seen without its event type, for [`AnyEnvelope`].
trait Erased: Any + Send + Sync {
    fn seq(&self) -> u64;
    fn sent_at(&self) -> SystemTime;
    fn origin(&self) -> &ScopeInfo;
    fn type_name(&self) -> &'static str;
    fn event_type_id(&self) -> TypeId;
}

impl<E: Send + Sync + 'static> Erased for Inner<E> {
    fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
    fn sent_at(&self) -> SystemTime {
        self.sent_at
    }
    fn origin(&self) -> &ScopeInfo {
        &self.origin
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<E>()
    }
    fn event_type_id(&self) -> TypeId {
        TypeId::of::<E>()
    }
}

/// One event of any type, as delivered to a multi-type subscription or a tap
/// ([`AnySubscription`](crate::AnySubscription)): the same shared allocation as the typed
/// [`Envelope`], with its type erased. [`downcast`](AnyEnvelope::downcast) gets the typed
/// envelope back.
///
/// ```
/// use scopebus::ctx;
///
/// struct Started(u32);
/// struct Stopped(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let mut lifecycle = ctx::subscribe_many().with::<Started>().with::<Stopped>().subscribe();
///     ctx::send(Started(1));
///     ctx::send(Stopped(1));
///     for event in lifecycle.drain() {
///         if let Some(started) = event.downcast_ref::<Started>() {
///             println!("started {}", started.0);
///         } else if let Ok(stopped) = event.downcast::<Stopped>() {
///             println!("stopped {} (#{})", stopped.0, stopped.seq());
///         }
///     }
/// }).await;
/// # }
/// ```
#[derive(Clone)]
pub struct AnyEnvelope {
    inner: Arc<dyn Erased>,
}

impl AnyEnvelope {
    /// The event's sequence number on its bus; see [`Envelope::seq`].
    pub fn seq(&self) -> u64 {
        self.inner.seq()
    }

    /// The wall-clock time at which the event was sent.
    pub fn sent_at(&self) -> SystemTime {
        self.inner.sent_at()
    }

    /// The scope the event was sent from.
    pub fn origin(&self) -> &ScopeInfo {
        self.inner.origin()
    }

    /// `std::any::type_name` of the event's type (for diagnostics only).
    pub fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }

    /// The `TypeId` of the event's type.
    pub fn type_id(&self) -> TypeId {
        self.inner.event_type_id()
    }

    /// `true` if the event is an `E`.
    pub fn is<E: Send + Sync + 'static>(&self) -> bool {
        self.type_id() == TypeId::of::<E>()
    }

    /// The event, if it is an `E`.
    pub fn downcast_ref<E: Send + Sync + 'static>(&self) -> Option<&E> {
        let any: &dyn Any = &*self.inner;
        any.downcast_ref::<Inner<E>>().map(|inner| &inner.event)
    }

    /// The typed envelope, if the event is an `E`; otherwise `self` back.
    ///
    /// # Errors
    ///
    /// Returns `self` unchanged when the event is not an `E`.
    pub fn downcast<E: Send + Sync + 'static>(self) -> Result<Envelope<E>, AnyEnvelope> {
        if !self.is::<E>() {
            return Err(self);
        }
        let any: Arc<dyn Any + Send + Sync> = self.inner;
        Ok(Envelope {
            inner: any.downcast::<Inner<E>>().expect("type checked above"),
        })
    }

    /// `true` when both handles refer to the same send (the same allocation).
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        Arc::ptr_eq(&this.inner, &other.inner)
    }
}

impl<E: Send + Sync + 'static> From<Envelope<E>> for AnyEnvelope {
    fn from(envelope: Envelope<E>) -> Self {
        Self {
            inner: envelope.inner,
        }
    }
}

impl fmt::Debug for AnyEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyEnvelope")
            .field("seq", &self.seq())
            .field("type", &self.type_name())
            .field("origin", self.origin())
            .finish_non_exhaustive()
    }
}

impl<E> Envelope<E> {
    /// Wraps an event for sending; the sequence number is assigned by [`Envelope::set_seq`].
    pub(crate) fn new(event: E, origin: Arc<ScopeInfo>) -> Self {
        Self::stamped(event, origin, crate::clock::now())
    }

    /// An envelope whose send time is given: an event imported by the NATS bridge keeps the
    /// time it was sent in its own process.
    #[inline]
    pub(crate) fn stamped(event: E, origin: Arc<ScopeInfo>, sent_at: SystemTime) -> Self {
        Self {
            inner: Arc::new(Inner {
                seq: AtomicU64::new(0),
                sent_at,
                origin,
                event,
            }),
        }
    }

    /// Sets the sequence number, before fan-out. (`&mut self` documents that the envelope is
    /// not shared yet; no `Arc::get_mut`, whose uniqueness check is an atomic read-modify-write
    /// on every send.)
    /// The envelope as the `Arc` it is (for a log slot).
    pub(crate) fn into_shared(self) -> Arc<Inner<E>> {
        self.inner
    }

    /// An envelope from a log slot's `Arc`.
    pub(crate) fn from_shared(inner: Arc<Inner<E>>) -> Self {
        Self { inner }
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.inner.seq.store(seq, Ordering::Relaxed);
    }

    /// The origin scope, shared.
    pub(crate) fn origin_arc(&self) -> Arc<ScopeInfo> {
        self.inner.origin.clone()
    }

    /// Gives the event back when it was never shared (a send that reached nobody).
    pub(crate) fn into_event(self) -> Option<E> {
        Arc::into_inner(self.inner).map(|inner| inner.event)
    }

    /// The event's sequence number on its bus: strictly increasing in send order, shared by all
    /// event types of the bus (so numbers of one type can have gaps).
    pub fn seq(&self) -> u64 {
        self.inner.seq.load(Ordering::Relaxed)
    }

    /// The wall-clock time at which the event was sent (for an event imported by the NATS
    /// bridge, the time it was sent in its own process).
    pub fn sent_at(&self) -> SystemTime {
        self.inner.sent_at
    }

    /// The scope the event was sent from.
    pub fn origin(&self) -> &ScopeInfo {
        &self.inner.origin
    }

    /// The event itself (also reachable through `Deref`).
    pub fn event(&self) -> &E {
        &self.inner.event
    }

    /// `true` when both handles refer to the same send (the same allocation).
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        Arc::ptr_eq(&this.inner, &other.inner)
    }
}

impl<E> Clone for Envelope<E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E> Deref for Envelope<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.inner.event
    }
}

impl<E> AsRef<E> for Envelope<E> {
    fn as_ref(&self) -> &E {
        &self.inner.event
    }
}

impl<E: fmt::Debug> fmt::Debug for Envelope<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("seq", &self.inner.seq)
            .field("origin", &self.inner.origin)
            .field("event", &self.inner.event)
            .finish()
    }
}
