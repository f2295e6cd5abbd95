//! Error types. Every error says what went wrong and, where the caller can act, what to do.
//!
//! None of them requires anything of the event type: `SendError<E>` is `Debug`, `Display` and
//! `std::error::Error` for every `E`, and hands the event back.

use std::fmt;
use std::marker::PhantomData;

/// Why [`ctx::try_send`](crate::ctx::try_send) did not publish the event.
///
/// The event is handed back by [`SendError::into_event`].
///
/// ```
/// use scopebus::{ctx, SendErrorKind};
///
/// struct Ping;
///
/// let err = ctx::try_send(Ping).unwrap_err(); // no scope is current here
/// assert_eq!(err.kind(), SendErrorKind::NoScope);
/// let _ping: Ping = err.into_event();
/// ```
pub struct SendError<E> {
    kind: SendErrorKind,
    event: E,
}

/// The reason carried by a [`SendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// No scope is current: the call was made outside `ctx::scope(..).run(..)` and outside any
    /// task started with `ctx::spawn`.
    NoScope,
    /// The bus is closed: the scope that owns it has finished its body.
    Closed,
    /// The event type is owned on this bus (registered with
    /// [`ctx::register`](crate::ctx::register), not `open`): only its
    /// [`Producer`](crate::Producer) may send it.
    NotOwner,
    /// The [`Producer`](crate::Producer)'s registration has ended (unregistered, or its owner
    /// scope exited): it can no longer send.
    Unregistered,
}

impl<E> SendError<E> {
    pub(crate) fn new(kind: SendErrorKind, event: E) -> Self {
        Self { kind, event }
    }

    /// Why the send failed.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The event that was not sent.
    pub fn event(&self) -> &E {
        &self.event
    }

    /// Takes the event back.
    pub fn into_event(self) -> E {
        self.event
    }
}

impl<E> fmt::Debug for SendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .field("event", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E> fmt::Display for SendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_send_error(f, self.kind, std::any::type_name::<E>())
    }
}

/// A [`SendError`]'s message without its event.
struct Refusal<E>(SendErrorKind, PhantomData<E>);

impl<E> fmt::Display for Refusal<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_send_error(f, self.0, std::any::type_name::<E>())
    }
}

/// What a [`SendError`] of `kind` says about an event of type `event`.
fn write_send_error(f: &mut fmt::Formatter<'_>, kind: SendErrorKind, event: &str) -> fmt::Result {
    match kind {
        SendErrorKind::NoScope => f.write_str(NO_SCOPE),
        SendErrorKind::Closed => write!(
            f,
            "event `{event}` not sent: the bus is closed because the scope that owns it has finished"
        ),
        SendErrorKind::NotOwner => write!(
            f,
            "event `{event}` not sent: it is owned by a `Producer` on this bus; send it through \
             the `Producer` returned by `ctx::register`, or register it with \
             `RegisterOptions::open()`"
        ),
        SendErrorKind::Unregistered => write!(
            f,
            "event `{event}` not sent: this `Producer`'s registration has ended (unregistered, \
             or its owner scope exited)"
        ),
    }
}

impl<E> std::error::Error for SendError<E> {}

/// Why [`ctx::register`](crate::ctx::register) did not make the type owned.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RegisterError {
    /// No scope is current.
    NoScope,
    /// The type is already registered on this bus, by a producer of the scope `owner`. (On
    /// another bus, the same type is a different event and can be registered there.)
    Taken {
        /// The scope that registered the type.
        owner: std::sync::Arc<crate::ScopeInfo>,
    },
    /// The bus is closed.
    Closed,
    /// The current scope has already ended its registrations: a registration made now would
    /// outlive it.
    ScopeFinished,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NoScope => f.write_str(NO_SCOPE),
            RegisterError::Taken { owner } => write!(
                f,
                "the event type is already registered on this bus by scope `{owner}`; \
                 share that `Producer` (clone it) instead of registering twice"
            ),
            RegisterError::Closed => f.write_str("the bus is closed"),
            RegisterError::ScopeFinished => f.write_str(
                "the scope has already finished, so the registration would outlive its owner",
            ),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Why [`ctx::try_subscribe`](crate::ctx::try_subscribe) returned no subscription.
///
/// Subscribing on a closed bus is not an error: it returns a subscription that has already ended,
/// so a consumer loop finishes at once instead of hanging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubscribeError {
    /// No scope is current.
    NoScope,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscribeError::NoScope => f.write_str(NO_SCOPE),
        }
    }
}

impl std::error::Error for SubscribeError {}

/// Why [`ctx::try_spawn`](crate::ctx::try_spawn) did not start the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnError {
    /// No scope is current.
    NoScope,
    /// No tokio runtime is running on this thread.
    NoRuntime,
    /// The scope has already finished: nothing would wait for the task.
    ScopeFinished,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NoScope => f.write_str(NO_SCOPE),
            SpawnError::NoRuntime => f.write_str(
                "no tokio runtime is running on this thread; call `ctx::spawn` from inside a runtime",
            ),
            SpawnError::ScopeFinished => f.write_str(
                "the scope has already finished, so nothing would wait for the task",
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

/// How a task started with [`ctx::spawn`](crate::ctx::spawn) ended without a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled: by [`TaskHandle::abort`](crate::TaskHandle::abort), by its scope
    /// failing or being dropped, or by a shutdown deadline. Not a failure of the scope.
    Cancelled,
    /// The task panicked with this message. Its scope fails and `run` resumes the panic.
    Panicked(String),
}

impl TaskError {
    /// `true` for [`TaskError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// `true` for [`TaskError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::Panicked(message) => write!(f, "task panicked: {message}"),
        }
    }
}

impl std::error::Error for TaskError {}

const NO_SCOPE: &str = "no scopebus scope is current; wrap the code in `ctx::scope(..).run(..)` or start it with `ctx::spawn`";

/// The message of a plain `ctx::` call made outside of any scope.
pub(crate) fn no_scope_panic(function: &str) -> String {
    format!(
        "`ctx::{function}` called outside of a scope; wrap the task in `ctx::scope(..).run(..)` or start it with `ctx::spawn`"
    )
}

/// Unwraps the result of a `ctx::` call that needs a scope, or panics at the caller's location
/// (every function on the way is `#[track_caller]`; a closure would not be).
#[track_caller]
pub(crate) fn expect_scope<T>(function: &str, value: Option<T>) -> T {
    match value {
        Some(value) => value,
        None => panic!("{}", no_scope_panic(function)),
    }
}

/// The text of a panic payload (`&str` or `String`), as `std` prints it.
/// The result of a plain (non-`try_`) send: a closed bus delivers to nobody (shutdown races are
/// not bugs); no scope and sending an owned type are, so they panic with what to do.
#[track_caller]
#[inline(always)]
pub(crate) fn plain_send<E>(
    function: &str,
    result: Result<crate::Sent, SendError<E>>,
) -> crate::Sent {
    plain_outcome::<E>(function, Some(result.map_err(|error| error.kind())))
}

/// [`plain_send`] for an outcome whose event was dropped already (`None`: outside of a scope).
#[track_caller]
#[inline]
pub(crate) fn plain_outcome<E>(
    function: &str,
    outcome: Option<Result<crate::Sent, SendErrorKind>>,
) -> crate::Sent {
    match outcome {
        Some(Ok(sent)) => sent,
        Some(Err(SendErrorKind::Closed)) => crate::Sent::Delivered(0),
        Some(Err(SendErrorKind::NoScope)) | None => panic!("{}", no_scope_panic(function)),
        Some(Err(kind)) => panic!("`{function}`: {}", Refusal::<E>(kind, PhantomData)),
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Why a NATS bridge could not be installed or used (feature `nats`).
#[cfg(feature = "nats")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeError {
    /// `install` was called outside of a scope; call it from a scope's body or task.
    NoScope,
    /// The scope that would own the bridge has finished.
    ScopeFinished,
    /// A wire name, prefix or node name breaks the naming rules.
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subject pattern is malformed (nothing was sent to the server).
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting makes no sense (for example an export queue of capacity 0).
    InvalidConfig(String),
    /// The client could not connect (the client's message).
    Connect(String),
    /// The server refused a subscription (the client's message).
    Subscribe(String),
    /// An operation did not complete in time: `connect`, `subscribe`, `history`, ...
    Timeout(&'static str),
    /// JetStream refused or failed an operation on the history stream (the client's
    /// message), or the stream that exists does not keep the bridge's subjects.
    Stream(String),
    /// A history query on a bridge made without [`Bridge::history`](crate::Bridge::history).
    NoHistory,
}

#[cfg(feature = "nats")]
impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::NoScope => f.write_str(
                "the bridge was installed outside of a scope; call `install` inside \
                 `ctx::scope(..).run(..)`",
            ),
            BridgeError::ScopeFinished => {
                f.write_str("the scope that would own the bridge has finished")
            }
            BridgeError::InvalidName { name, reason } => {
                write!(f, "invalid name `{name}`: {reason}")
            }
            BridgeError::InvalidPattern { pattern, reason } => {
                write!(f, "invalid subject pattern `{pattern}`: {reason}")
            }
            BridgeError::InvalidConfig(reason) => write!(f, "invalid bridge setting: {reason}"),
            BridgeError::Connect(error) => write!(f, "could not connect to NATS: {error}"),
            BridgeError::Subscribe(error) => write!(f, "NATS refused a subscription: {error}"),
            BridgeError::Timeout(what) => write!(f, "NATS did not answer in time ({what})"),
            BridgeError::Stream(error) => write!(f, "JetStream history: {error}"),
            BridgeError::NoHistory => {
                f.write_str("this bridge keeps no history; configure one with `Bridge::history`")
            }
        }
    }
}

#[cfg(feature = "nats")]
impl std::error::Error for BridgeError {}
