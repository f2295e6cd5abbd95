//! Scopes: [`Scope`] (the builder), `Frame` (a running scope) and [`ScopeHandle`].
//!
//! A running scope is a `Frame`: its identity, its bus (owned by root and isolated scopes,
//! shared by nested ones), its task tracker, its cancellation signal (`shutdown`, cooperative,
//! a child of the parent's), its abort node (hard, a child of the parent's), the subscriptions it
//! created, and its failure.
//!
//! Exit order once the body completes (SPEC §3.2): (a) subscriptions created in the scope stop
//! accepting events, yield what they hold and end; (b) an owned bus closes; (c) the scope waits
//! for all its tasks, which may still spawn tasks; (d) `run` returns the body's output. An owned
//! bus refuses sends from just before (a), so a task that sees its subscription end and then
//! sends always gets `Closed` — never a send accepted by a bus that is about to close.
//!
//! Failure: the first panic (body or task) is kept; the scope raises its cancellation signal,
//! aborts its tasks (and those of nested scopes), drops the body, goes through the exit order and
//! resumes the panic. Dropping the `run` future cancels the same way, from the guard.
//!
//! Invariants:
//! - `owned.ended` is set once, before the subscriptions are ended; a subscription created later
//!   is ended at once, so nothing created in a finished scope can hang.
//! - `finished` is set only after every task has stopped (or when the scope is dropped).
//!
//! Lifecycle events (`ScopeStarted`, `ScopeStopped`) are published on the parent's bus; state is
//! inherited through `StateMap` (see `state.rs`).
//!
//! - The shutdown token, abort node and hold of a nested scope are made from its parent's when
//!   first needed (most scopes never cancel and many never spawn): a token or node made after
//!   the parent's was cancelled or aborted is born so, and the node and hold exist before the
//!   first task that uses them.
//!
//! Lock order: `owned`, `failure` and `timers` are leaf locks, never held while another lock of
//! the crate is taken. A scope's `hold` lock may be held while its parent's is taken (making
//! the hold chain, child before parent), never the other way round.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::future::{Future, poll_fn};
use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::task::AtomicWaker;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::abort::AbortNode;
use crate::bus::{Bus, BusConfig, TopicOf};
use crate::context;
use crate::delivery::{DropReport, Policy};
use crate::error::{SendError, panic_message, plain_send};
use crate::producer::Registered;
use crate::sent::Sent;
use crate::state::StateMap;
use crate::stats::BusStats;
use crate::subscription::{AnySubscription, EndReason, Endable, Subscription};
use crate::sync::lock;
use crate::system::{ScopeOutcome, ScopeStarted, ScopeStopped};
use crate::tracker::Tracker;

/// A scope's process-unique identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(NonZeroU64);

impl ScopeId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NonZeroU64::new(NEXT.fetch_add(1, Ordering::Relaxed)).expect("64-bit counter"))
    }

    /// The identifier as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identity of a scope: its name and its process-unique id. Every [`Envelope`] carries the
/// `ScopeInfo` of the scope it was sent from.
///
/// An event imported from another process by the NATS bridge (feature `nats`) carries the
/// scope it was sent from over there: its name, the [`node`](Self::node) it came from, and a
/// local id standing for that remote scope.
///
/// [`Envelope`]: crate::Envelope
#[derive(Debug)]
pub struct ScopeInfo {
    id: ScopeId,
    name: Cow<'static, str>,
    node: Option<Arc<str>>,
}

impl ScopeInfo {
    /// The scope's id. For a remote scope (see [`node`](Self::node)), an id of this process
    /// that stands for it: the same for every event from that scope of that node while the
    /// bridge runs.
    pub fn id(&self) -> ScopeId {
        self.id
    }

    /// The name given to [`ctx::scope`](crate::ctx::scope).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node an imported event came from (the sending bridge's node name), or `None` for a
    /// scope of this process.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// A scope of another process, as seen by the bridge that imports its events.
    #[cfg(feature = "nats")]
    pub(crate) fn remote(node: Arc<str>, name: String) -> Self {
        Self {
            id: ScopeId::next(),
            name: Cow::Owned(name),
            node: Some(node),
        }
    }
}

impl fmt::Display for ScopeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{}#{}@{node}", self.name, self.id),
            None => write!(f, "{}#{}", self.name, self.id),
        }
    }
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A scope to run: built by [`ctx::scope`](crate::ctx::scope), configured, then [`run`](Scope::run).
///
/// ```
/// use scopebus::ctx;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let out = ctx::scope("worker").isolated().run(async { 1 + 1 }).await;
/// assert_eq!(out, 2);
/// # }
/// ```
#[must_use = "a scope does nothing until `run` is awaited"]
pub struct Scope {
    name: Cow<'static, str>,
    isolated: bool,
    shutdown_on: Option<(Signal, Duration)>,
    bus: BusConfig,
    state: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
}

impl Scope {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        Self {
            name,
            isolated: false,
            shutdown_on: None,
            bus: BusConfig::default(),
            state: Vec::new(),
        }
    }

    /// Attaches an immutable value of type `T`, read with [`ctx::state::<T>()`](crate::ctx::state)
    /// by the scope's body, its tasks and its nested scopes (isolated ones too). A nested scope
    /// that attaches a `T` of its own overrides it for its subtree; the parent is untouched.
    /// Attaching two values of one type keeps the last.
    ///
    /// ```
    /// use scopebus::ctx;
    ///
    /// struct Config { retries: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// ctx::scope("app").with_state(Config { retries: 3 }).run(async {
    ///     assert_eq!(ctx::state::<Config>().retries, 3);
    ///     ctx::scope("strict").with_state(Config { retries: 0 }).run(async {
    ///         assert_eq!(ctx::state::<Config>().retries, 0); // overridden here
    ///     }).await;
    ///     assert_eq!(ctx::state::<Config>().retries, 3); // the parent is untouched
    /// }).await;
    /// # }
    /// ```
    pub fn with_state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.retain(|(id, _)| *id != TypeId::of::<T>());
        self.state.push((TypeId::of::<T>(), Arc::new(value)));
        self
    }

    /// Gives the scope its own bus: events sent inside it are not seen outside, and events sent
    /// outside are not seen inside. Nested scopes of an isolated scope share its bus.
    ///
    /// Isolation is about events only: cancellation and failure still flow from parent to child.
    pub fn isolated(mut self) -> Self {
        self.isolated = true;
        self
    }

    /// Sets the drop callback of the bus this scope owns: called once per event lost by a
    /// critical (not lossy) bounded subscription, with the event type, the subscriber's name and
    /// its capacity. It is never called while a lock of the bus is held, so it may send or
    /// subscribe; it runs on the sending thread, so keep it short (log, count, notify). A drop
    /// caused by the callback itself (its own send finding a full queue) is counted and
    /// published as [`EventDropped`](crate::EventDropped), but not given to the callback again:
    /// that would recurse without end.
    ///
    /// Only a scope that owns a bus — a root scope or an isolated one — can set it: `run`
    /// panics with an explanation if this scope turns out to share its parent's bus.
    pub fn on_drop<F>(mut self, callback: F) -> Self
    where
        F: Fn(&DropReport) + Send + Sync + 'static,
    {
        self.bus.on_drop = Some(Arc::new(callback));
        self
    }

    /// Makes the bus this scope owns publish a [`DeadLetter`](crate::DeadLetter) for every
    /// event that reaches no subscription (except dead letters themselves). Off by default: it
    /// costs a second send for every unheard event.
    ///
    /// Like [`on_drop`](Self::on_drop), only for a scope that owns its bus.
    pub fn dead_letters(mut self) -> Self {
        self.bus.dead_letters = true;
        self
    }

    /// Starts the bus this scope owns paused: every send is held, in order, in a bounded buffer
    /// ([`Sent::Held`](crate::Sent::Held)) until [`ctx::start`](crate::ctx::start) delivers the
    /// held events to the subscriptions that exist then, before any later send. Use it to
    /// subscribe everything first and then let events flow, with none lost in between.
    ///
    /// If the bus is still paused when the scope's body completes, it is started then, so held
    /// events are delivered (and the subscriptions yield them before they end), never lost.
    ///
    /// Like [`on_drop`](Self::on_drop), only for a scope that owns its bus.
    pub fn paused(mut self) -> Self {
        self.bus.paused = true;
        self
    }

    /// How many events the bus holds while paused (default 1000). When the buffer is full, a
    /// plain send drops its event — counted in [`BusStats::dropped_held`], reported to the drop
    /// callback and returned as [`Sent::Dropped`](crate::Sent::Dropped) — while
    /// [`ctx::send_wait`](crate::ctx::send_wait) waits for `start()`.
    ///
    /// The library's own system events (`TaskSpawned`, ...) take room in the buffer only when
    /// someone subscribed to their type; a dropped `EventDropped` is counted like any event.
    ///
    /// Like [`on_drop`](Self::on_drop), only for a scope that owns its bus.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    #[track_caller]
    pub fn held_capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "`held_capacity` needs at least 1; a paused bus that can hold nothing would drop \
             every send"
        );
        self.bus.held_capacity = capacity;
        self
    }

    /// Starts a graceful shutdown of the scope when `signal` completes — typically
    /// `tokio::signal::ctrl_c()` — exactly as [`ScopeHandle::shutdown`] with `grace` would.
    ///
    /// The signal is polled by the `run` future itself (it is not a task, so it never keeps the
    /// scope alive).
    pub fn shutdown_on<S>(mut self, signal: S, grace: Duration) -> Self
    where
        S: Future + Send + 'static,
    {
        self.shutdown_on = Some((Box::pin(signal.map(drop)), grace));
        self
    }

    /// Runs `body` inside the scope and returns its output once the scope has fully exited.
    ///
    /// Inside `body` (and inside every task it spawns) this scope is current: `ctx::send`,
    /// `ctx::subscribe` and `ctx::spawn` act on it.
    ///
    /// When the body completes: subscriptions created in the scope yield what they hold, then
    /// end; the scope's own bus (root or isolated) closes; the scope waits for every task spawned
    /// in it; then the output is returned.
    ///
    /// # Panics
    ///
    /// If the body or any task of the scope panics, the scope cancels the body and every other
    /// task, waits for them to stop, and then resumes the first panic (as
    /// `std::thread::scope` does).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future cancels the scope: its subscriptions end, its bus closes and
    /// every task of the scope and of its nested scopes is aborted (each stops at its next poll).
    ///
    /// The returned future is `Send` whenever `body` and its output are, so a scope can itself be
    /// handed to `tokio::spawn`.
    pub fn run<F: Future>(self, body: F) -> impl Future<Output = F::Output> {
        run(self, body)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("name", &self.name)
            .field("isolated", &self.isolated)
            .field(
                "shutdown_on",
                &self.shutdown_on.as_ref().map(|(_, grace)| grace),
            )
            .finish()
    }
}

/// A running scope (see the module documentation).
pub(crate) struct Frame {
    id: ScopeId,
    /// The scope's name when it is `'static` (the common case), for [`Frame::info`]; an owned
    /// name goes straight into `info`.
    static_name: &'static str,
    /// The scope's identity, shared by the envelopes it sends and its system events: made on
    /// first use (most nested scopes never need it), or at once for an owned name.
    info: OnceLock<Arc<ScopeInfo>>,
    pub(crate) state: Arc<StateMap>,
    /// The parent scope: its bus is where this scope's lifecycle events are published, and
    /// the shutdown token, abort node and hold below are made from its own when first needed.
    parent: Option<Arc<Frame>>,
    isolated: bool,
    pub(crate) bus: Arc<Bus>,
    owns_bus: bool,
    /// What the exit waits for: the scope's tasks and the holds of nested scopes with tasks.
    pub(crate) tasks: Tracker,
    /// The cancellation signal, a child of the parent's: made on first use (most scopes never
    /// use it), and then born cancelled if the parent's already is.
    shutdown: OnceLock<CancellationToken>,
    /// This scope's node in the abort tree, a child of the parent's: made on first use (by the
    /// first task, or an abort), and then born aborted if the parent's already is.
    abort: OnceLock<Arc<AbortNode>>,
    pub(crate) span: tracing::Span,
    failed: AtomicBool,
    /// The `run` future's waker, woken by [`fail`](Self::fail): a failure stops the body.
    body_waker: AtomicWaker,
    /// The `run` future is being dropped (set before the body is dropped).
    cancelling: AtomicBool,
    failure: Mutex<Option<Box<dyn Any + Send>>>,
    owned: Mutex<Owned>,
    /// Registrations made in this scope (`producer.rs`), ended when it exits; `None` once ended.
    registrations: Mutex<Option<Vec<Weak<dyn Registered>>>>,
    timers: Mutex<Vec<tokio::task::AbortHandle>>,
    finished: AtomicBool,
    /// Keeps every ancestor's task tracker busy while any task of this scope is alive: made
    /// at the first spawn, cloned into each task, released when the scope finishes or is
    /// cancelled (so a `ScopeHandle` that outlives the scope holds nothing). The scope itself
    /// needs none: its `run` future is polled by its parent's body or by one of the parent's
    /// tasks (that is what makes it nested), which the parent already waits for.
    hold: Mutex<HoldState>,
}

/// One count in the parent's tracker, and the parent's own hold: a chain up to the root.
///
/// Why: when a task running a nested scope is aborted, the nested `run` future is dropped and
/// can only *start* aborting its tasks. Each of those tasks still holds the chain, so every
/// ancestor keeps waiting until they are really gone — no task outlives any enclosing scope.
pub(crate) struct Hold {
    /// The scope whose tracker counts this hold.
    counted_by: Arc<Frame>,
    _parent: Option<Arc<Hold>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.counted_by.tasks.release();
    }
}

/// A scope's [`Hold`] (see `Frame::hold`).
enum HoldState {
    /// No task spawned yet.
    None,
    Held(Arc<Hold>),
    /// The scope finished: new tasks hold nothing (they are refused or aborted anyway).
    Released,
}

/// The subscriptions a scope created, ended when its body completes.
struct Owned {
    ended: Option<EndReason>,
    subs: Vec<Weak<dyn Endable>>,
    /// Prune dead entries when `subs` reaches this length (amortised O(1) per subscribe).
    prune_at: usize,
}

impl Frame {
    fn new(
        name: Cow<'static, str>,
        isolated: bool,
        config: BusConfig,
        state: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
        parent: Option<Arc<Frame>>,
    ) -> Self {
        let id = ScopeId::next();
        let (bus, owns_bus) = match &parent {
            Some(parent) if !isolated => {
                assert!(
                    config.is_default(),
                    "`Scope::on_drop`, `dead_letters`, `paused` and `held_capacity` configure a \
                     bus, but scope `{}` shares its parent's bus; set them on the root scope or \
                     make this scope `isolated()`",
                    name
                );
                (parent.bus.clone(), false)
            }
            // `new_cyclic`: built in its allocation, not copied into it (see `run`).
            _ => (Arc::new_cyclic(|_| Bus::new(config)), true),
        };
        let span = match &parent {
            Some(parent) => tracing::info_span!(
                parent: &parent.span,
                "scope",
                name = %name,
                id = id.get(),
                isolated
            ),
            None => tracing::info_span!("scope", name = %name, id = id.get(), isolated),
        };
        let (static_name, info) = match name {
            Cow::Borrowed(name) => (name, OnceLock::new()),
            Cow::Owned(_) => (
                "",
                OnceLock::from(Arc::new(ScopeInfo {
                    id,
                    name,
                    node: None,
                })),
            ),
        };
        Self {
            id,
            static_name,
            info,
            state: StateMap::inherit(parent.as_ref().map(|p| &p.state), state),
            abort: OnceLock::new(),
            parent,
            isolated,
            bus,
            owns_bus,
            tasks: Tracker::new(),
            shutdown: OnceLock::new(),
            span,
            failed: AtomicBool::new(false),
            body_waker: AtomicWaker::new(),
            cancelling: AtomicBool::new(false),
            failure: Mutex::new(None),
            owned: Mutex::new(Owned {
                ended: None,
                subs: Vec::new(),
                prune_at: 16,
            }),
            registrations: Mutex::new(Some(Vec::new())),
            timers: Mutex::new(Vec::new()),
            finished: AtomicBool::new(false),
            hold: Mutex::new(HoldState::None),
        }
    }

    /// The scope's identity (made on first use, see the field).
    #[inline]
    pub(crate) fn info(&self) -> &Arc<ScopeInfo> {
        self.info.get_or_init(|| {
            Arc::new(ScopeInfo {
                id: self.id,
                name: Cow::Borrowed(self.static_name),
                node: None,
            })
        })
    }

    /// The hold a new task of this scope keeps (see [`Hold`]): made at the first spawn, from
    /// the parent's (made now too if the parent has none yet). `None` for a root scope and
    /// once the scope has finished.
    pub(crate) fn hold(&self) -> Option<Arc<Hold>> {
        let parent = self.parent.as_ref()?;
        let mut hold = lock(&self.hold);
        match &*hold {
            HoldState::Held(held) => Some(held.clone()),
            HoldState::Released => None,
            HoldState::None => {
                // Lock order: a scope's hold, then its parent's (child before parent).
                parent.tasks.add();
                let held = Arc::new(Hold {
                    counted_by: parent.clone(),
                    _parent: parent.hold(),
                });
                *hold = HoldState::Held(held.clone());
                Some(held)
            }
        }
    }

    /// The scope's node in the abort tree (made on first use, see the field).
    pub(crate) fn abort_node(&self) -> &Arc<AbortNode> {
        self.abort.get_or_init(|| match &self.parent {
            Some(parent) => AbortNode::child(parent.abort_node()),
            None => AbortNode::root(),
        })
    }

    /// The scope's cancellation signal (made on first use, see the field).
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        self.shutdown.get_or_init(|| match &self.parent {
            Some(parent) => parent.shutdown_token().child_token(),
            None => CancellationToken::new(),
        })
    }

    /// A new subscription to `E`, owned by this scope.
    pub(crate) fn subscribe_with<E: Send + Sync + 'static>(
        &self,
        policy: Policy,
    ) -> Subscription<E> {
        // If the scope's subscriptions already ended, `own` ends this one too.
        if policy.is_unbounded() {
            // The default: a reader of the type's shared log.
            let Some(reader) = self.bus.subscribe_log::<E>(&policy) else {
                return Subscription::ended(EndReason::BusClosed);
            };
            self.own(Arc::downgrade(reader.cursor()) as Weak<dyn Endable>);
            return Subscription::from_log(reader);
        }
        if policy.coalesce {
            // Keep-latest: a reader of the type's latest cell.
            let Some(reader) = self.bus.subscribe_latest::<E>(&policy) else {
                return Subscription::ended(EndReason::BusClosed);
            };
            self.own(Arc::downgrade(reader.cursor()) as Weak<dyn Endable>);
            return Subscription::from_latest(reader);
        }
        let Some(queue) = self.bus.subscribe::<E>(policy) else {
            return Subscription::ended(EndReason::BusClosed);
        };
        self.own(Arc::downgrade(&queue) as Weak<dyn Endable>);
        Subscription::new(queue)
    }

    /// A new multi-type subscription (`types`) or tap (`None`), owned by this scope.
    pub(crate) fn subscribe_many(
        &self,
        types: Option<&[TopicOf]>,
        policy: Policy,
    ) -> AnySubscription {
        let queue = match types {
            Some(types) => self.bus.subscribe_many(types, policy),
            None => self.bus.tap(policy),
        };
        match queue {
            Some(queue) => {
                self.own(Arc::downgrade(&queue) as Weak<dyn Endable>);
                AnySubscription::new(queue)
            }
            None => AnySubscription::ended(EndReason::BusClosed),
        }
    }

    /// Registers a queue as owned by this scope; if the scope's subscriptions have already
    /// ended, ends it at once.
    fn own(&self, weak: Weak<dyn Endable>) {
        let mut owned = lock(&self.owned);
        if let Some(reason) = owned.ended {
            drop(owned);
            if let Some(sub) = weak.upgrade() {
                sub.end_subscription(reason);
            }
            return;
        }
        if owned.subs.len() >= owned.prune_at {
            owned.subs.retain(|sub| sub.strong_count() > 0);
            owned.prune_at = (owned.subs.len() * 2).max(16);
        }
        owned.subs.push(weak);
    }

    /// Ends every subscription created in this scope, and every later one.
    fn end_subscriptions(&self, reason: EndReason) {
        let subs = {
            let mut owned = lock(&self.owned);
            if owned.ended.is_some() {
                return;
            }
            owned.ended = Some(reason);
            std::mem::take(&mut owned.subs)
        };
        for sub in subs {
            if let Some(sub) = sub.upgrade() {
                sub.end_subscription(reason);
            }
        }
    }

    /// Keeps a registration to end when the scope exits; `false` if it has already ended its
    /// registrations.
    pub(crate) fn own_registration(&self, registration: Weak<dyn Registered>) -> bool {
        let mut registrations = lock(&self.registrations);
        let Some(list) = registrations.as_mut() else {
            return false;
        };
        list.retain(|r| r.strong_count() > 0);
        list.push(registration);
        true
    }

    /// Ends the registrations made in this scope, and refuses later ones.
    fn end_registrations(&self, reason: EndReason) {
        let list = lock(&self.registrations).take().unwrap_or_default();
        for registration in list.iter().filter_map(Weak::upgrade) {
            registration.end(reason);
        }
    }

    /// Records a panic of the body or of a task and cancels the scope.
    pub(crate) fn fail(&self, payload: Box<dyn Any + Send>) {
        {
            let mut failure = lock(&self.failure);
            if failure.is_none() {
                *failure = Some(payload);
            } else {
                tracing::error!(parent: &self.span, panic = %panic_message(&*payload), "another panic in a failing scope");
            }
        }
        self.failed.store(true, Ordering::Release);
        tracing::error!(parent: &self.span, "scope failed: cancelling its body and tasks");
        self.shutdown_token().cancel();
        self.abort_node().abort();
        self.body_waker.wake();
    }

    /// How a registration of this scope ends when its last handle is dropped now: a producer
    /// dropped because its owner failed or is being cancelled reports that, not a plain
    /// unregister.
    pub(crate) fn unregister_reason(&self) -> EndReason {
        // Dropped by a panic unwinding (before the scope has even recorded it), or after it.
        if self.has_failed() || std::thread::panicking() {
            EndReason::OwnerFailed
        } else if self.cancelling.load(Ordering::Acquire) {
            EndReason::OwnerCancelled
        } else {
            EndReason::Unregistered
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Raises the cancellation signal, then aborts what is left after `grace`.
    pub(crate) fn shutdown(&self, grace: Duration) {
        self.shutdown_token().cancel();
        if grace.is_zero() || self.is_finished() {
            self.abort_node().abort();
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to time the grace period: abort at once rather than never.
            self.abort_node().abort();
            return;
        };
        let node = Arc::downgrade(self.abort_node());
        let timer = runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(node) = node.upgrade() {
                node.abort();
            }
        });
        lock(&self.timers).push(timer.abort_handle());
        if self.is_finished() {
            timer.abort();
        }
    }

    /// Marks the scope finished and stops its shutdown timers.
    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        let released = std::mem::replace(&mut *lock(&self.hold), HoldState::Released);
        drop(released);
        for timer in lock(&self.timers).drain(..) {
            timer.abort();
        }
    }

    /// Publishes `ScopeStarted` on the parent's bus.
    fn announce_start(&self) {
        if let Some(parent) = &self.parent {
            parent.bus.publish_with(|| {
                let origin = self.info();
                let event = ScopeStarted {
                    scope: origin.clone(),
                    parent: parent.id,
                    isolated: self.isolated,
                };
                (origin, event)
            });
        }
    }

    /// Publishes `ScopeStopped` on the parent's bus.
    fn announce_stop(&self, outcome: ScopeOutcome) {
        if let Some(parent) = &self.parent {
            parent.bus.publish_with(|| {
                let origin = self.info();
                let scope = origin.clone();
                (origin, ScopeStopped { scope, outcome })
            });
        }
    }

    /// Cancels everything: the `run` future was dropped before the scope finished.
    fn cancel(&self) {
        tracing::debug!(parent: &self.span, "scope cancelled: its run future was dropped");
        // First, so that `Drop` code of the tasks being aborted cannot start new ones.
        self.finished.store(true, Ordering::Release);
        self.cancelling.store(true, Ordering::Release);
        self.shutdown_token().cancel();
        self.abort_node().abort();
        if self.owns_bus {
            self.bus.start(); // held events are delivered, not lost
        }
        self.end_subscriptions(EndReason::ScopeCancelled);
        if self.owns_bus {
            self.bus.close();
        }
        self.tasks.close();
        self.end_registrations(EndReason::OwnerCancelled);
        self.finish();
        self.announce_stop(ScopeOutcome::Cancelled);
    }
}

/// Polls the `shutdown_on` signal, if any, and starts the shutdown when it fires.
#[inline]
fn poll_signal(signal: &mut Option<(Signal, Duration)>, frame: &Frame, cx: &mut Context<'_>) {
    if signal.is_some() {
        poll_set_signal(signal, frame, cx);
    }
}

#[inline(never)]
fn poll_set_signal(signal: &mut Option<(Signal, Duration)>, frame: &Frame, cx: &mut Context<'_>) {
    if let Some((future, grace)) = signal
        && future.as_mut().poll(cx).is_ready()
    {
        let grace = *grace;
        *signal = None;
        tracing::info!(parent: &frame.span, ?grace, "shutdown signal received");
        frame.shutdown(grace);
    }
}

async fn run<F: Future>(scope: Scope, body: F) -> F::Output {
    let Scope {
        name,
        isolated,
        shutdown_on: mut signal,
        bus,
        state,
    } = scope;
    // `new_cyclic` allocates first and builds the frame into the allocation: one copy of the
    // frame's bytes where `Arc::new` made two (8 % of a nested scope's instructions).
    let frame = Arc::new_cyclic(|_| Frame::new(name, isolated, bus, state, context::current()));
    let guard = scopeguard::guard(frame.clone(), |frame| frame.cancel());
    tracing::debug!(parent: &frame.span, "scope started");
    frame.announce_start();

    // The body, until it completes or a task fails.
    let mut body = pin!(Some(
        context::scoped(frame.clone(), AssertUnwindSafe(body).catch_unwind())
            .instrument(frame.span.clone())
    ));
    // Dropped before the body if the `run` future is dropped while the body is alive: the
    // body's `Drop` code (a producer going away) then sees the scope as cancelled.
    let body_dropped_early = scopeguard::guard(frame.clone(), |frame| {
        frame.cancelling.store(true, Ordering::Release);
    });
    let outcome = poll_fn(|cx| {
        poll_signal(&mut signal, &frame, cx);
        if frame.has_failed() {
            return Poll::Ready(None);
        }
        let Some(body) = body.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(output) = body.poll(cx) {
            return Poll::Ready(Some(output));
        }
        // Registered only when the body waits (a body that completes at once never does),
        // then the flag looked at again: a failure before the registration is seen here, one
        // after it wakes us (`fail` raises the flag, then wakes).
        frame.body_waker.register(cx.waker());
        if frame.has_failed() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await;
    let output = match outcome {
        Some(Ok(value)) => Some(value),
        Some(Err(payload)) => {
            frame.fail(payload);
            None
        }
        None => None,
    };
    // Drop a cancelled body now, with its scope still current for its `Drop` code.
    scopeguard::ScopeGuard::into_inner(body_dropped_early);
    body.set(None);

    // Exit order: subscriptions, bus, tasks.
    let reason = if frame.has_failed() {
        EndReason::ScopeFailed
    } else {
        EndReason::ScopeFinished
    };
    if frame.owns_bus {
        // A bus still paused delivers what it held first: those events are not lost.
        frame.bus.start();
        // Closed before the subscriptions end, so that whoever sees its stream end also sees
        // the bus closed.
        frame.bus.mark_closed();
    }
    frame.end_subscriptions(reason);
    if frame.owns_bus {
        frame.bus.close();
    }
    frame.tasks.close();
    let mut tasks = pin!(frame.tasks.wait());
    poll_fn(|cx| {
        poll_signal(&mut signal, &frame, cx);
        tasks.as_mut().poll(cx)
    })
    .await;
    // The owner's tasks have stopped: its registrations end, with the scope's outcome.
    frame.end_registrations(if frame.has_failed() {
        EndReason::OwnerFailed
    } else {
        EndReason::OwnerFinished
    });
    frame.finish();
    scopeguard::ScopeGuard::into_inner(guard);

    let failure = lock(&frame.failure).take();
    if let Some(payload) = failure {
        tracing::debug!(parent: &frame.span, "scope finished: failed");
        frame.announce_stop(ScopeOutcome::Failed(panic_message(&*payload)));
        resume_unwind(payload);
    }
    tracing::debug!(parent: &frame.span, "scope finished");
    frame.announce_stop(ScopeOutcome::Finished);
    output.expect("a scope that did not fail has its body's output")
}

/// A handle to a running scope, for cancelling it from anywhere (another task, a signal
/// handler). Obtained with [`ctx::current`](crate::ctx::current).
///
/// ```
/// use std::time::Duration;
/// use scopebus::ctx;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("server").run(async {
///     let handle = ctx::current();
///     ctx::spawn(async {
///         ctx::cancelled().await; // a worker that stops when asked
///     });
///     handle.shutdown(Duration::from_secs(5));
///     assert!(handle.is_cancelled());
/// }).await;
/// # }
/// ```
#[derive(Clone)]
pub struct ScopeHandle {
    frame: Arc<Frame>,
}

impl ScopeHandle {
    pub(crate) fn new(frame: Arc<Frame>) -> Self {
        Self { frame }
    }

    /// The scope's name and id.
    pub fn info(&self) -> &ScopeInfo {
        self.frame.info()
    }

    /// Publishes `event` on this scope's bus, from anywhere: another scope (an isolated
    /// component answering its parent), a task of another runtime, or a plain thread. The
    /// envelope's origin is this scope. Returns what became of it ([`Sent::Delivered`]`(0)`
    /// once the bus is closed); see [`ctx::send`](crate::ctx::send).
    ///
    /// # Panics
    ///
    /// If `E` is owned by a [`Producer`](crate::Producer) on this bus (see
    /// [`ctx::send`](crate::ctx::send)).
    ///
    /// ```
    /// use futures::StreamExt;
    /// use scopebus::ctx;
    ///
    /// struct Done(u32);
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// ctx::scope("app").run(async {
    ///     let mut done = ctx::subscribe::<Done>();
    ///     let app = ctx::current();
    ///     std::thread::spawn(move || app.send(Done(1))).join().unwrap();
    ///     assert_eq!(done.next().await.unwrap().0, 1);
    /// }).await;
    /// # }
    /// ```
    #[track_caller]
    pub fn send<E: Send + Sync + 'static>(&self, event: E) -> Sent {
        plain_send("ScopeHandle::send", self.try_send(event))
    }

    /// Publishes like [`ScopeHandle::send`], or says why it could not.
    ///
    /// # Errors
    ///
    /// [`SendErrorKind::Closed`](crate::SendErrorKind::Closed) once the bus is closed,
    /// [`SendErrorKind::NotOwner`](crate::SendErrorKind::NotOwner) if `E` is owned by a
    /// producer.
    pub fn try_send<E: Send + Sync + 'static>(&self, event: E) -> Result<Sent, SendError<E>> {
        self.frame.bus.send(self.frame.info(), event)
    }

    /// Holds every later send on this scope's bus until [`start`](Self::start); see
    /// [`ctx::pause`](crate::ctx::pause).
    pub fn pause(&self) {
        self.frame.bus.pause();
    }

    /// Delivers what the paused bus held, then lets sends through; see
    /// [`ctx::start`](crate::ctx::start).
    pub fn start(&self) {
        self.frame.bus.start();
    }

    /// `true` while this scope's bus is paused.
    pub fn is_paused(&self) -> bool {
        self.frame.bus.is_paused()
    }

    /// Subscribes to `E` on this scope's bus; the subscription is owned by this scope (it ends
    /// when this scope's body completes). See [`ctx::subscribe`](crate::ctx::subscribe).
    pub fn subscribe<E: Send + Sync + 'static>(&self) -> Subscription<E> {
        self.frame.subscribe_with(Policy::lossless())
    }

    pub(crate) fn subscribe_with<E: Send + Sync + 'static>(
        &self,
        policy: Policy,
    ) -> Subscription<E> {
        self.frame.subscribe_with(policy)
    }

    /// Keeps the last `count` events of `E` sent on this scope's bus, for subscriptions that
    /// ask for [`replay`](crate::SubscriptionBuilder::replay); see [`ctx::retain`](crate::ctx::retain).
    pub fn retain<E: Send + Sync + 'static>(&self, count: usize) {
        self.frame.bus.retain::<E>(count);
    }

    /// A snapshot of the counters of this scope's bus; see [`BusStats`].
    pub fn stats(&self) -> BusStats {
        self.frame.bus.stats()
    }

    /// Asks the scope to shut down gracefully: raises its cancellation signal (seen by
    /// [`ctx::cancelled`](crate::ctx::cancelled) in the scope, its tasks and its nested scopes),
    /// then, if tasks of the scope are still running after `grace`, aborts them.
    ///
    /// The body itself is never aborted by the deadline — it is your code and `run` must return
    /// its output — so a body should watch `ctx::cancelled()` too. To bound the body as well, wrap
    /// `run` in `tokio::time::timeout`: dropping it cancels everything.
    ///
    /// Calling it again keeps the earliest deadline. The grace period is timed on the current
    /// tokio runtime, which needs its time driver (`#[tokio::main]` has it); with no runtime, or
    /// a zero `grace`, tasks are aborted at once.
    pub fn shutdown(&self, grace: Duration) {
        self.frame.shutdown(grace);
    }

    /// `true` once the scope's cancellation signal is raised (shutdown, failure or drop).
    pub fn is_cancelled(&self) -> bool {
        self.frame.shutdown_token().is_cancelled()
    }

    /// Completes when the scope's cancellation signal is raised.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        self.frame.shutdown_token().clone().cancelled_owned()
    }
}

impl fmt::Debug for ScopeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeHandle")
            .field("scope", self.frame.info())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
