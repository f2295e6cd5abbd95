//! # scopebus
//!
//! Scoped structured concurrency with a typed event bus, for tokio.
//!
//! - [`ctx::scope`]`(name).`[`run`](Scope::run)`(body)` opens a scope;
//! - [`ctx::send`]`(event)` publishes an event to every subscription of its exact type;
//! - [`ctx::subscribe`]`::<E>()` returns a [`Subscription<E>`], a `Stream` of every `E` sent
//!   from then on;
//! - [`ctx::spawn`]`(future)` starts a task that cannot outlive its scope.
//!
//! Root and [isolated](Scope::isolated) scopes own a bus; nested scopes share their parent's.
//!
//! ```
//! use futures::StreamExt;
//! use scopebus::ctx;
//!
//! #[derive(Debug)]
//! struct UserLoggedIn { user_id: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! ctx::scope("app").run(async {
//!     let mut logins = ctx::subscribe::<UserLoggedIn>();
//!     ctx::spawn(async move {
//!         while let Some(event) = logins.next().await {
//!             println!("user {} logged in", event.user_id);
//!         }
//!     });
//!     ctx::send(UserLoggedIn { user_id: 7 });
//! }).await;
//! # }
//! ```
//!
//! The user guide is the book in `book/`; its chapter "Semantics and guarantees" states every
//! promise precisely.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod abort;
mod abort_flag;
/// The primitives `slot.rs`, `waiters.rs`, `tracker.rs`, `abort_flag.rs` and `gate.rs` are
/// written against: std's here; the loom model
/// (`tests/loom.rs`) includes those files with loom's instead.
mod atomics {
    pub(crate) use futures::task::AtomicWaker;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, fence};
    pub(crate) use std::sync::{Arc, Mutex};
}
#[cfg(feature = "nats")]
mod bridge;
mod bus;
mod clock;
mod context;
pub mod ctx;
mod delivery;
mod error;
mod event;
mod gate;
#[cfg(feature = "nats")]
mod history;
mod latest;
mod log;
mod pause;
#[cfg(feature = "nats")]
mod persistent;
#[cfg(feature = "nats")]
mod presence;
mod producer;
#[cfg(feature = "nats")]
mod remote;
mod request;
mod scope;
mod sent;
mod slot;
mod spawn;
mod state;
mod stats;
mod subscription;
mod sync;
mod system;
mod table;
mod topic;
mod tracker;
mod waiters;
#[cfg(feature = "nats")]
mod wire;

#[cfg(feature = "nats")]
pub use async_nats::ConnectOptions;
#[cfg(feature = "nats")]
pub use bridge::{Bridge, BridgeHandle, BridgeLagging, BridgeStats, ExportQueue, RawSubscription};
pub use delivery::{DropReport, ManyBuilder, Overflow, SubscriptionBuilder};
#[cfg(feature = "nats")]
pub use error::BridgeError;
pub use error::{RegisterError, SendError, SendErrorKind, SpawnError, SubscribeError, TaskError};
pub use event::{AnyEnvelope, Envelope};
#[cfg(feature = "nats")]
pub use history::{History, Stored};
#[cfg(feature = "nats")]
pub use persistent::Delivery;
#[cfg(feature = "nats")]
pub use presence::{LinkEnd, LinkedSubscription, NodeHealth, NodeJoined, NodeLeft, NodeLeftReason};
pub use producer::{Demand, DemandChange, Producer, RegisterOptions};
#[cfg(feature = "nats")]
pub use remote::RemoteEvent;
pub use request::{
    Request, RequestError, RequestId, RequestOptions, Responder, Response, Responses,
};
pub use scope::{Scope, ScopeHandle, ScopeId, ScopeInfo};
pub use sent::Sent;
pub use spawn::TaskHandle;
pub use state::StateError;
pub use stats::{BusStats, TypeStats};
pub use subscription::{AnySubscription, EndReason, Subscription, TryNextError};
pub use system::{
    DeadLetter, EventDropped, ScopeOutcome, ScopeStarted, ScopeStopped, TaskCancelled, TaskFailed,
    TaskFinished, TaskId, TaskSpawned,
};
#[cfg(feature = "nats")]
pub use wire::RawEvent;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
