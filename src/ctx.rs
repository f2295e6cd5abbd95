//! The facade: everything a scope's code calls, as free functions acting on the current scope.
//!
//! Each plain form panics outside of a scope with a message saying what to do; each `try_` form
//! returns an error instead. Nothing here fails silently.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::bus;
use crate::context;
use crate::delivery::{ManyBuilder, Policy, SubscriptionBuilder};
use crate::error::{
    RegisterError, SendError, SendErrorKind, SpawnError, SubscribeError, expect_scope,
    no_scope_panic, plain_outcome,
};
use crate::producer::{Producer, RegisterOptions};
pub use crate::request::{request, respond};
use crate::scope::{Scope, ScopeHandle};
use crate::sent::Sent;
use crate::spawn::{TaskHandle, spawn_in};
use crate::state::StateError;
use crate::stats::BusStats;
use crate::subscription::Subscription;
use crate::topic::{Full, Sender};

/// Creates a scope named `name`; configure it, then [`Scope::run`] it.
///
/// Entered with no scope current, it is a *root* scope and owns a new bus. Entered inside
/// another scope, it shares that scope's bus unless made [`isolated`](Scope::isolated).
///
/// ```
/// use scopebus::ctx;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let greeting = ctx::scope("app").run(async { "hello" }).await;
/// assert_eq!(greeting, "hello");
/// # }
/// ```
pub fn scope(name: impl Into<Cow<'static, str>>) -> Scope {
    Scope::new(name.into())
}

/// Publishes `event` on the current scope's bus; returns what became of it: [`Sent::Delivered`]
/// with how many subscriptions accepted it, or [`Sent::Held`] while the bus is paused.
///
/// Every live [`Subscription<E>`] on the bus receives the event, whichever scope of the bus
/// created it. Routing is by the exact type `E`. The event is allocated once and shared, never
/// cloned. With no subscriber the event is dropped at once and nothing is allocated. On a closed
/// bus (its owning scope has finished) nothing is delivered and `Sent::Delivered(0)` is
/// returned; use [`try_send`] to tell the cases apart.
///
/// `send` never blocks and never awaits.
///
/// # Panics
///
/// Outside of a scope, and when `E` is owned by a [`Producer`] on this bus
/// (registered with [`register`], not `open`): both are bugs to fix, not conditions to handle.
/// Use [`try_send`] to get an error instead.
///
/// ```
/// use scopebus::{ctx, Sent};
///
/// struct Saved { id: u64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     assert_eq!(ctx::send(Saved { id: 1 }), Sent::Delivered(0)); // nobody listens yet
///     let _a = ctx::subscribe::<Saved>();
///     let _b = ctx::subscribe::<Saved>();
///     assert_eq!(ctx::send(Saved { id: 2 }).delivered(), 2);
/// }).await;
/// # }
/// ```
#[track_caller]
#[inline]
pub fn send<E: Send + Sync + 'static>(event: E) -> Sent {
    // One context lookup, and only the outcome comes back (not the event): on the hot path,
    // moving the event back out through the layers of `try_send`'s result costs more than
    // the send itself when nobody listens.
    let outcome = context::with(move |frame| frame.bus.send_or_drop(frame.info(), event));
    plain_outcome::<E>("send", outcome)
}

/// Publishes `event` like [`send`], or says why it could not, handing the event back.
///
/// # Errors
///
/// [`SendErrorKind::NoScope`] outside of a scope; [`SendErrorKind::Closed`] when the bus is
/// closed; [`SendErrorKind::NotOwner`] when `E` is owned by a [`Producer`].
#[inline]
pub fn try_send<E: Send + Sync + 'static>(event: E) -> Result<Sent, SendError<E>> {
    if !context::is_set() {
        return Err(SendError::new(SendErrorKind::NoScope, event));
    }
    // The event moves straight into the send (no `Option` to take it back from): cheaper on
    // the hot path than one context lookup that must hand the event back when unset.
    context::with(move |frame| frame.bus.send(frame.info(), event)).expect("checked just above")
}

/// Publishes `event` like [`send`], but first waits until every subscription of `E` whose
/// policy is [`Overflow::Wait`](crate::Overflow::Wait) has room: for producers that must lose
/// nothing and must not grow memory. Subscriptions with other policies are not waited for.
/// While the bus is paused the event is held ([`Sent::Held`]); if the held buffer is full,
/// `send_wait` waits for [`start`] rather than drop it.
///
/// The scope is captured when `send_wait` is called, so the future is `'static` and can be
/// awaited anywhere.
///
/// # Errors
///
/// [`SendErrorKind::NoScope`] outside of a scope, [`SendErrorKind::Closed`] if the bus closes
/// (before or while waiting), [`SendErrorKind::NotOwner`] if `E` is owned by a producer. A full
/// subscription that ends stops being waited for.
///
/// # Cancel safety
///
/// Cancel-safe: the event is published at the moment the future completes, to all
/// subscriptions at once, or not at all. Dropping the future before it completes publishes
/// nothing (the event is dropped with it) and leaves nothing registered.
///
/// ```
/// use futures::StreamExt;
/// use scopebus::{ctx, Overflow};
///
/// struct Chunk(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("pipeline").run(async {
///     let mut writer = ctx::subscription::<Chunk>().bounded(4, Overflow::Wait).subscribe();
///     let consumer = ctx::spawn(async move {
///         let mut n = 0;
///         while let Some(chunk) = writer.next().await {
///             assert_eq!(chunk.0, n);
///             n += 1;
///         }
///         n
///     });
///     for i in 0..100 {
///         ctx::send_wait(Chunk(i)).await.unwrap(); // at most 4 in flight, none lost
///     }
///     consumer
/// }).await.await.map(|n| assert_eq!(n, 100)).unwrap();
/// # }
/// ```
pub fn send_wait<E: Send + Sync + 'static>(
    event: E,
) -> impl Future<Output = Result<Sent, SendError<E>>> + Send + 'static {
    let frame = context::current();
    bus::send_wait(event, move |event, waker| match &frame {
        Some(frame) => {
            frame
                .bus
                .try_send_with_room(frame.info(), event, waker, Sender::Anyone, None)
        }
        None => Err(Full::Refused(SendError::new(SendErrorKind::NoScope, event))),
    })
}

/// Subscribes to every `E` sent on the current scope's bus from now on.
///
/// The subscription is owned by the current scope: when the scope's body completes, it yields
/// what it holds and ends. On a closed bus it is returned already ended (it never hangs).
///
/// # Panics
///
/// Outside of a scope. Use [`try_subscribe`] to get an error instead.
#[track_caller]
pub fn subscribe<E: Send + Sync + 'static>() -> Subscription<E> {
    expect_scope("subscribe", try_subscribe().ok())
}

/// Subscribes like [`subscribe`], or returns an error outside of a scope.
///
/// # Errors
///
/// [`SubscribeError::NoScope`] outside of a scope.
pub fn try_subscribe<E: Send + Sync + 'static>() -> Result<Subscription<E>, SubscribeError> {
    context::with(|frame| frame.subscribe_with::<E>(Policy::lossless()))
        .ok_or(SubscribeError::NoScope)
}

/// Options for a subscription to `E`: bounded with an overflow policy, keep-latest, lossy,
/// named. Finish with [`SubscriptionBuilder::subscribe`].
///
/// ```
/// use scopebus::ctx;
///
/// struct Position { x: i32 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("ui").run(async {
///     let mut cursor = ctx::subscription::<Position>().keep_latest().subscribe();
///     for x in 0..10 {
///         ctx::send(Position { x });
///     }
///     assert_eq!(cursor.try_next().unwrap().x, 9); // only the newest is kept
///     assert_eq!(cursor.missed(), 9);              // and the gap is visible
/// }).await;
/// # }
/// ```
pub fn subscription<E: Send + Sync + 'static>() -> SubscriptionBuilder<E> {
    SubscriptionBuilder::new()
}

/// Starts `future` as a task of the current scope, on the current tokio runtime.
///
/// The task runs with the scope as its context (so it can `send`, `subscribe` and `spawn`) and
/// inside the scope's tracing span. The scope waits for it before `run` returns; if it panics,
/// the scope fails. Dropping the returned [`TaskHandle`] does not cancel the task.
///
/// # Panics
///
/// Outside of a scope, outside of a tokio runtime, or in a scope that has already finished. Use
/// [`try_spawn`] to get an error instead.
#[track_caller]
pub fn spawn<F>(future: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match try_spawn(future) {
        Ok(handle) => handle,
        Err(SpawnError::NoScope) => panic!("{}", no_scope_panic("spawn")),
        Err(error) => panic!("`ctx::spawn` failed: {error}"),
    }
}

/// Starts a task like [`spawn`], or returns why it could not.
///
/// # Errors
///
/// [`SpawnError::NoScope`], [`SpawnError::NoRuntime`] or [`SpawnError::ScopeFinished`].
pub fn try_spawn<F>(future: F) -> Result<TaskHandle<F::Output>, SpawnError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with(|frame| spawn_in(frame, future)).unwrap_or(Err(SpawnError::NoScope))
}

/// Completes when the current scope is asked to stop: a graceful shutdown, a failure of the
/// scope or of a parent, or the `run` future being dropped.
///
/// Long-running tasks select on it to stop cleanly.
///
/// # Panics
///
/// Outside of a scope.
///
/// # Cancel safety
///
/// Cancel-safe: it only waits.
///
/// ```
/// use std::time::Duration;
/// use scopebus::ctx;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     ctx::spawn(async {
///         loop {
///             tokio::select! {
///                 _ = ctx::cancelled() => break, // clean stop
///                 _ = tokio::time::sleep(Duration::from_millis(10)) => { /* work */ }
///             }
///         }
///     });
///     ctx::shutdown(Duration::from_secs(1));
/// }).await;
/// # }
/// ```
#[track_caller]
pub fn cancelled() -> impl Future<Output = ()> + Send + 'static {
    current_or_panic("cancelled").cancelled()
}

/// `true` once the current scope is asked to stop (see [`cancelled`]).
///
/// # Panics
///
/// Outside of a scope.
#[track_caller]
pub fn is_cancelled() -> bool {
    expect_scope(
        "is_cancelled",
        context::with(|frame| frame.shutdown_token().is_cancelled()),
    )
}

/// Asks the current scope to shut down gracefully; see [`ScopeHandle::shutdown`].
///
/// # Panics
///
/// Outside of a scope.
#[track_caller]
pub fn shutdown(grace: Duration) {
    expect_scope("shutdown", context::with(|frame| frame.shutdown(grace)));
}

/// Makes `E` an owned event on the current scope's bus and returns the [`Producer`] that sends
/// it. While the registration lasts, a plain [`send`] of `E` is refused (it panics; [`try_send`]
/// returns [`SendErrorKind::NotOwner`]) unless the options say [`open`](RegisterOptions::open).
/// Clone the producer to delegate.
///
/// The registration belongs to the current scope: it ends when the scope exits (after its
/// tasks), when [`Producer::unregister`] is called or when the last producer handle is dropped.
/// Then every subscription of `E` yields what it holds and ends with the reason (see
/// [`EndReason`](crate::EndReason)), and `E` can be registered again. The same type on another
/// bus (an isolated scope) is a different event, registered separately.
///
/// # Errors
///
/// [`RegisterError::Taken`] if `E` is already registered on this bus,
/// [`RegisterError::Closed`] on a closed bus, [`RegisterError::NoScope`] outside of a scope,
/// [`RegisterError::ScopeFinished`] from `Drop` code of a finished scope.
///
/// ```
/// use scopebus::{ctx, RegisterError, RegisterOptions, SendErrorKind};
///
/// struct Temperature(f32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("plant").run(async {
///     let sensor = ctx::register::<Temperature>(RegisterOptions::new()).unwrap();
///     let twin = ctx::register::<Temperature>(RegisterOptions::new());
///     assert!(matches!(twin, Err(RegisterError::Taken { .. })));
///     let refused = ctx::try_send(Temperature(20.0)).unwrap_err();
///     assert_eq!(refused.kind(), SendErrorKind::NotOwner);
///     let mut readings = ctx::subscribe::<Temperature>();
///     let delegate = sensor.clone();
///     ctx::spawn(async move { delegate.send(Temperature(21.5)).unwrap() }).await.unwrap();
///     assert_eq!(readings.try_next().unwrap().0, 21.5);
/// }).await;
/// # }
/// ```
pub fn register<E: Send + Sync + 'static>(
    options: RegisterOptions,
) -> Result<Producer<E>, RegisterError> {
    context::with(|frame| crate::producer::register(frame, options))
        .unwrap_or(Err(RegisterError::NoScope))
}

/// Pauses the current scope's bus: later sends are held, in order, in a bounded buffer
/// ([`Sent::Held`]) until [`start`]. Idempotent. See [`Scope::paused`] to start paused and
/// [`Scope::held_capacity`] for the buffer's size.
///
/// # Panics
///
/// Outside of a scope.
#[track_caller]
pub fn pause() {
    expect_scope("pause", context::with(|frame| frame.bus.pause()));
}

/// Starts the current scope's bus: delivers the held events, in send order, to the
/// subscriptions that exist now, before any later send, then lets sends through. Idempotent: on
/// a bus that is not paused it does nothing.
///
/// # Panics
///
/// Outside of a scope.
///
/// ```
/// use scopebus::{ctx, Sent};
///
/// struct Config(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("boot").paused().run(async {
///     assert_eq!(ctx::send(Config(1)), Sent::Held); // nobody subscribed yet: held, not lost
///     let mut config = ctx::subscribe::<Config>();
///     ctx::start();
///     assert_eq!(config.try_next().unwrap().0, 1);
/// }).await;
/// # }
/// ```
#[track_caller]
pub fn start() {
    expect_scope("start", context::with(|frame| frame.bus.start()));
}

/// `true` while the current scope's bus is paused.
///
/// # Panics
///
/// Outside of a scope.
#[track_caller]
pub fn is_paused() -> bool {
    expect_scope("is_paused", context::with(|frame| frame.bus.is_paused()))
}

/// Keeps the last `count` events of type `E` sent on the current scope's bus from now on, so
/// that a subscription made with [`replay`](SubscriptionBuilder::replay) receives them first
/// (a catch-up buffer). `0` stops keeping and frees what was kept. Retention belongs to the bus:
/// it lasts until the bus closes.
///
/// Retained events are shared with the subscriptions (no copy); they count in
/// [`TypeStats::retained`](crate::TypeStats::retained).
///
/// # Panics
///
/// Outside of a scope.
///
/// ```
/// use scopebus::ctx;
///
/// struct Price(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("market").run(async {
///     ctx::retain::<Price>(2);
///     for p in [10, 11, 12] {
///         ctx::send(Price(p));
///     }
///     let mut late = ctx::subscription::<Price>().replay().subscribe();
///     let caught_up: Vec<u32> = late.drain().iter().map(|p| p.0).collect();
///     assert_eq!(caught_up, [11, 12]); // the last two, oldest first
/// }).await;
/// # }
/// ```
#[track_caller]
pub fn retain<E: Send + Sync + 'static>(count: usize) {
    expect_scope(
        "retain",
        context::with(|frame| frame.bus.retain::<E>(count)),
    );
}

/// Options for one subscription over several event types: add types with
/// [`ManyBuilder::with`], then [`subscribe`](ManyBuilder::subscribe). Items are
/// [`AnyEnvelope`](crate::AnyEnvelope)s in bus sequence order; see
/// [`AnySubscription`](crate::AnySubscription).
///
/// ```
/// use futures::StreamExt;
/// use scopebus::ctx;
///
/// struct Opened(u32);
/// struct Closed(u32);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let mut doors = ctx::subscribe_many().with::<Opened>().with::<Closed>().subscribe();
///     ctx::send(Opened(1));
///     ctx::send(Closed(1));
///     let first = doors.next().await.unwrap();
///     assert!(first.is::<Opened>());
///     assert_eq!(doors.next().await.unwrap().downcast::<Closed>().ok().unwrap().0, 1);
/// }).await;
/// # }
/// ```
pub fn subscribe_many() -> ManyBuilder {
    ManyBuilder::new(false)
}

/// Options for a tap: one subscription to **every** event type of the current scope's bus, in
/// bus sequence order — for debugging and logging. Finish with
/// [`subscribe`](ManyBuilder::subscribe); `bounded(..).lossy()` suits a log that must never
/// hold the application back.
///
/// While a tap exists, every send on the bus takes one bus-wide lock for its fan-out (that is
/// what makes the one order possible); without taps, nothing is paid.
///
/// ```
/// use scopebus::ctx;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let mut log = ctx::tap().name("log").subscribe();
///     ctx::send(1u32);
///     ctx::send("hello");
///     let types: Vec<&str> = log.drain().iter().map(|e| e.type_name()).collect();
///     assert_eq!(types, ["u32", "&str"]);
/// }).await;
/// # }
/// ```
pub fn tap() -> ManyBuilder {
    ManyBuilder::new(true)
}

/// The value of type `T` attached to the current scope or the nearest enclosing scope that has
/// one ([`Scope::with_state`]): a shared, immutable handle.
///
/// # Panics
///
/// Outside of a scope, or when no enclosing scope attached a `T` (the message names the type).
/// Use [`try_state`] to get an error instead.
#[track_caller]
pub fn state<T: Send + Sync + 'static>() -> Arc<T> {
    match try_state::<T>() {
        Ok(value) => value,
        Err(StateError::NoScope) => panic!("{}", no_scope_panic("state")),
        Err(error) => panic!("`ctx::state` failed: {error}"),
    }
}

/// The state of type `T` like [`state`], or why there is none.
///
/// # Errors
///
/// [`StateError::NoScope`] outside of a scope, [`StateError::Missing`] when no enclosing scope
/// attached a `T`.
pub fn try_state<T: Send + Sync + 'static>() -> Result<Arc<T>, StateError> {
    context::with(|frame| frame.state.get::<T>())
        .ok_or(StateError::NoScope)?
        .ok_or(StateError::Missing {
            type_name: std::any::type_name::<T>(),
        })
}

/// A snapshot of the counters of the current scope's bus; see [`BusStats`].
///
/// # Panics
///
/// Outside of a scope.
#[track_caller]
pub fn stats() -> BusStats {
    expect_scope("stats", context::with(|frame| frame.bus.stats()))
}

/// A handle to the current scope, usable from anywhere (see [`ScopeHandle`]).
///
/// # Panics
///
/// Outside of a scope. Use [`try_current`] to get `None` instead.
#[track_caller]
pub fn current() -> ScopeHandle {
    current_or_panic("current")
}

/// A handle to the current scope, or `None` outside of any scope.
pub fn try_current() -> Option<ScopeHandle> {
    context::current().map(ScopeHandle::new)
}

#[track_caller]
fn current_or_panic(function: &str) -> ScopeHandle {
    expect_scope(function, try_current())
}
