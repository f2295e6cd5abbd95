//! The NATS bridge (feature `nats`): [`Bridge`] (what to bridge, how to connect),
//! [`BridgeHandle`] (an installed bridge), [`BridgeStats`] and [`RawSubscription`].
//!
//! An installed bridge is one connection and one task of the scope that installed it:
//! - **Export.** For each exported type, a subscription of the scope's bus (made at install,
//!   so every event sent after `install` returns is seen) is read by the bridge's task, which
//!   publishes each *locally originated* event with its headers (`wire.rs`). The subscription
//!   is the export queue: bounded (drop-newest, counted) by default, so the bus never waits on
//!   NATS; every publish has a timeout.
//! - **Import.** One NATS subscription per imported type's subject. A message is checked (size,
//!   headers, own echo, duplicate id, type) before its payload is decoded, then sent into the
//!   bus as the same Rust type, stamped with its remote origin (`ScopeInfo::node`) and send
//!   time. Whatever is refused is counted, and logged at most once per 10 s per reason.
//! - **Shutdown.** When the scope's body completes, the bus ends the scope's subscriptions:
//!   the task stops importing, publishes what the export subscriptions still hold (bounded by
//!   the drain deadline; what is left is counted as abandoned), then drains the connection.
//!
//! Invariants:
//! - An event whose origin has a node (an imported one) is never exported: no loops, whatever
//!   the topology. An importer drops messages carrying its own instance id (its own echo) and
//!   ids it has seen among the last `dedup_window` (duplicates).
//! - Nothing on the import or export path panics on bad input; every refusal has a counter.
//!
//! Lock order: `Shared::logged` is a leaf lock. No lock is held across an `await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_nats::{Client, ConnectOptions, Event, Message, Subscriber};
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use futures::stream::{FusedStream, Stream};
use tokio_util::sync::CancellationToken;

use crate::context;
use crate::delivery::Overflow;
use crate::error::BridgeError;
use crate::event::Envelope;
use crate::history::{self, History, Stored};
use crate::persistent::{self, AckWindow, Acked, Delivery, Outgoing};
use crate::presence::{self, Kind, LinkedSubscription, NodeLeft, Peers, Refused};
use crate::remote::{RemoteEvent, WireName, check_pattern, check_prefix, check_token};
use crate::scope::Frame;
use crate::scope::ScopeInfo;
use crate::subscription::Subscription;
use crate::sync::lock;
use crate::wire::{self, Meta, RawEvent, WireError};

/// How an exported type's events wait for NATS.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct PriceChanged { cents: u64 }
/// # impl scopebus::RemoteEvent for PriceChanged {
/// #     const KIND: &'static str = "market";
/// #     const NAME: &'static str = "price";
/// # }
/// use scopebus::{Bridge, ExportQueue};
///
/// // Never drop an event, whatever the memory it takes while NATS is away.
/// let bridge = Bridge::new("nats://127.0.0.1:4222")
///     .export::<PriceChanged>()
///     .export_queue(ExportQueue::Hold);
/// # drop(bridge);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportQueue {
    /// Hold at most this many events per type; when NATS is slow or down and the queue is
    /// full, newer events are dropped, counted in [`BridgeStats::dropped_backpressure`] and
    /// announced by a [`BridgeLagging`] event. The default, with 4096.
    DropNewest(usize),
    /// Hold every event until NATS takes it: nothing is dropped, memory grows while NATS is
    /// away.
    Hold,
}

/// Published on the bridge's bus when exported events were dropped because NATS did not keep
/// up ([`ExportQueue::DropNewest`]); at most once a second.
///
/// ```
/// use futures::StreamExt;
/// use scopebus::{ctx, BridgeLagging};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ctx::scope("app").run(async {
///     let mut lagging = ctx::subscribe::<BridgeLagging>();
///     ctx::spawn(async move {
///         while let Some(lag) = lagging.next().await {
///             eprintln!("{}: {} events not exported so far", lag.node, lag.dropped);
///         }
///     });
/// }).await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeLagging {
    /// The bridge's node name.
    pub node: String,
    /// Events dropped so far by this bridge's export queues.
    pub dropped: u64,
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A bridge's counters, read with [`BridgeHandle::stats`]. Every refusal of bad input
        /// has its own counter; none of them stops the bridge.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct BridgeStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> BridgeStats {
                BridgeStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Events published to NATS.
    exported,
    /// Events received from NATS and sent into the bus.
    imported,
    /// Imported events the bus refused (it was closed, or the type is owned by a producer).
    refused_locally,
    /// Messages carrying this bridge's own instance id (its own publishes, echoed back).
    dropped_own_echo,
    /// Messages whose event id was seen among the last `dedup_window` ids.
    dropped_duplicate,
    /// Events of other nodes never received: gaps in a sender's per-type count (`Ev-Seq`).
    /// Core NATS is at-most-once: this is how loss across a disconnection is reported.
    lost_in_transit,
    /// Exported events dropped because the export queue was full.
    dropped_backpressure,
    /// Exported events still queued when the drain deadline passed at shutdown.
    abandoned_at_shutdown,
    /// Publishes that did not complete within the publish timeout.
    publish_timeout,
    /// Publishes the client refused, or persistent publishes not stored after every retry.
    publish_error,
    /// Persistent imports whose acknowledgement failed (the server will deliver them again;
    /// the duplicate is dropped if this bridge still remembers its id).
    ack_error,
    /// Events that could not be serialized.
    encode_error,
    /// Payloads that could not be decoded as their type.
    decode_error,
    /// Messages whose `Ev-Type` names no type imported on their subject.
    unknown_type,
    /// Messages without headers, or without one of the bridge's headers.
    missing_header,
    /// Messages with an unreadable header or an unknown codec.
    malformed_header,
    /// Payloads over the size limit (imported or exported).
    oversize,
    /// History entries skipped by a typed query: unreadable headers, another type, or a
    /// payload that does not decode (they do not count towards the query's limit).
    history_skipped,
    /// Exported header values that held control characters (CR, LF, ...), replaced by spaces.
    header_cleaned,
    /// Times the connection came back after a loss.
    reconnects,
    /// Times the connection was lost.
    disconnects,
    /// Times the client reported a slow consumer (messages lost inside the client).
    slow_consumer,
}

/// Export: makes the type's bus subscription (in the installing scope) and returns the loop
/// that publishes from it.
type StartExport =
    Box<dyn FnOnce(&Arc<Shared>) -> Result<BoxFuture<'static, ()>, BridgeError> + Send>;

/// Import: decodes a payload and sends it into the bus.
type Deliver = Arc<dyn Fn(&Shared, &Meta, &[u8]) -> Result<(), Refusal> + Send + Sync>;

enum Refusal {
    Decode(serde_json::Error),
    Local,
}

struct Import {
    name: WireName,
    deliver: Deliver,
    delivery: Delivery,
}

/// A NATS bridge to install in a scope: which event types go out and come in, and how to
/// connect. See the book's chapter "Across processes with NATS".
///
/// ```no_run
/// use scopebus::{ctx, Bridge, RemoteEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct PriceChanged { cents: u64 }
///
/// impl RemoteEvent for PriceChanged {
///     const KIND: &'static str = "market";
///     const NAME: &'static str = "price";
/// }
///
/// # async fn demo() -> Result<(), scopebus::BridgeError> {
/// ctx::scope("pricing").run(async {
///     let bridge = Bridge::new("nats://127.0.0.1:4222")
///         .node("pricing-1")
///         .export::<PriceChanged>()
///         .install()
///         .await?;
///     ctx::send(PriceChanged { cents: 101 }); // also published on `events.market.price`
///     println!("{:?}", bridge.stats());
///     Ok(())
/// }).await
/// # }
/// ```
#[must_use = "a bridge does nothing until `install` is awaited"]
pub struct Bridge {
    servers: String,
    options: Option<ConnectOptions>,
    node: Option<String>,
    prefix: String,
    exports: Vec<(WireName, Delivery, StartExport)>,
    imports: Vec<Import>,
    invalid: Option<BridgeError>,
    queue: ExportQueue,
    publish_timeout: Duration,
    drain_timeout: Duration,
    connect_timeout: Duration,
    dedup_window: usize,
    max_payload: usize,
    retry_initial: bool,
    heartbeat: Duration,
    history: Option<History>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("servers", &self.servers)
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field(
                "exports",
                &self
                    .exports
                    .iter()
                    .map(|(n, ..)| &n.name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "imports",
                &self
                    .imports
                    .iter()
                    .map(|i| &i.name.name)
                    .collect::<Vec<_>>(),
            )
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge to the NATS server(s) at `servers` (`nats://host:4222`, several separated by
    /// commas).
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            options: None,
            node: None,
            prefix: "events".to_owned(),
            exports: Vec::new(),
            imports: Vec::new(),
            invalid: None,
            queue: ExportQueue::DropNewest(4096),
            publish_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            dedup_window: 4096,
            max_payload: 1 << 20,
            retry_initial: false,
            heartbeat: Duration::from_secs(5),
            history: None,
        }
    }

    /// The client's connect options, passed through as they are: token, user and password,
    /// credentials, TLS, reconnect policy. The bridge only sets the connection's name
    /// (`scopebus-<node>`) and its event callback (which counts disconnects, reconnects and
    /// slow consumers).
    pub fn options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The node's name, carried by every exported event and in presence events: a token of
    /// `a-z`, `0-9`, `_`, `-`. Default: `node-` and 8 hex digits of the instance id.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if let Err(reason) = check_token(&name) {
            self.refuse(BridgeError::InvalidName {
                reason: format!("a node name {reason}"),
                name: name.clone(),
            });
        }
        self.node = Some(name);
        self
    }

    /// The first token(s) of every subject (default `events`): `events.<kind>.<name>`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        if let Err(error) = check_prefix(&prefix) {
            self.refuse(error);
        }
        self.prefix = prefix;
        self
    }

    /// Publishes the events of type `E` sent on the scope's bus (those sent in this process:
    /// imported ones never go out again), best effort ([`Delivery::BestEffort`]).
    pub fn export<E: RemoteEvent>(self) -> Self {
        self.export_with::<E>(Delivery::BestEffort)
    }

    /// Sends the events of type `E` published by other nodes into the scope's bus, as `E`,
    /// best effort ([`Delivery::BestEffort`]).
    pub fn import<E: RemoteEvent>(self) -> Self {
        self.import_with::<E>(Delivery::BestEffort)
    }

    /// [`export`](Self::export) with the given delivery mode. [`Delivery::Persistent`] stores
    /// every event in the history stream (made with the default [`History`] if none is
    /// configured).
    pub fn export_with<E: RemoteEvent>(mut self, delivery: Delivery) -> Self {
        let name = match self.register::<E>(true) {
            Some(name) => name,
            None => return self,
        };
        let wire = name.clone();
        let start: StartExport = Box::new(move |shared: &Arc<Shared>| {
            let builder = crate::ctx::subscription::<E>()
                .name(format!("nats-export:{}", wire.name))
                .lossy();
            let builder = match shared.queue {
                ExportQueue::DropNewest(capacity) => {
                    builder.bounded(capacity, Overflow::DropNewest)
                }
                ExportQueue::Hold => builder,
            };
            let subscription = builder
                .try_subscribe()
                .map_err(|_| BridgeError::ScopeFinished)?;
            let export = export_loop(subscription, shared.clone(), wire, delivery);
            Ok(Box::pin(export) as BoxFuture<'static, ()>)
        });
        self.exports.push((name, delivery, start));
        self
    }

    /// [`import`](Self::import) with the given delivery mode. [`Delivery::Persistent`] reads
    /// the history stream through a durable consumer named after this node and the type, so
    /// that a restart of the server or of this bridge (with the same node name) resumes where
    /// it stopped, without gaps or duplicates. Give each process its own node name: two
    /// bridges with one name would share the consumer and each see part of the events.
    pub fn import_with<E: RemoteEvent>(mut self, delivery: Delivery) -> Self {
        let Some(name) = self.register::<E>(false) else {
            return self;
        };
        let deliver: Deliver = Arc::new(|shared: &Shared, meta: &Meta, payload: &[u8]| {
            let event: E = serde_json::from_slice(payload).map_err(Refusal::Decode)?;
            let origin = shared.remote_scope(meta);
            let envelope = Envelope::stamped(event, origin, meta.sent_at);
            shared
                .frame
                .bus
                .send_stamped(envelope)
                .map(drop)
                .map_err(|_| Refusal::Local)
        });
        self.imports.push(Import {
            name,
            deliver,
            delivery,
        });
        self
    }

    /// How exported events wait for NATS (default [`ExportQueue::DropNewest`]`(4096)`).
    pub fn export_queue(mut self, queue: ExportQueue) -> Self {
        if queue == ExportQueue::DropNewest(0) {
            self.refuse(BridgeError::InvalidConfig(
                "an export queue of capacity 0 would drop every event".to_owned(),
            ));
        }
        self.queue = queue;
        self
    }

    /// The longest a publish may take before the event is counted as lost (default 1 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// At shutdown, the longest the bridge keeps publishing what its export queues hold
    /// (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The longest `install` waits for the first connection (default 10 s). Ignored with
    /// [`retry_on_initial_connect`](Self::retry_on_initial_connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many recent event ids the importer remembers to drop duplicates (default 4096).
    pub fn dedup_window(mut self, ids: usize) -> Self {
        self.dedup_window = ids;
        self
    }

    /// The largest payload exported or imported, in bytes (default 1 MiB, and never more than
    /// the server's own limit). Larger ones are counted in [`BridgeStats::oversize`].
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// `install` returns at once even if no server answers yet; the client keeps trying in the
    /// background (exports wait in their queues meanwhile).
    pub fn retry_on_initial_connect(mut self) -> Self {
        self.retry_initial = true;
        self
    }

    /// How often the node says it is alive (default 5 s). Other nodes count it as gone after
    /// three intervals without a word ([`NodeLeftReason::MissedHeartbeats`]).
    ///
    /// [`NodeLeftReason::MissedHeartbeats`]: crate::NodeLeftReason::MissedHeartbeats
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        if interval.is_zero() {
            self.refuse(BridgeError::InvalidConfig(
                "a heartbeat interval of 0".to_owned(),
            ));
        }
        self.heartbeat = interval;
        self
    }

    /// Keep the bridged events in a JetStream stream, made (or checked, if it exists) at
    /// install, and answer history queries from it ([`BridgeHandle::history`]). Every node of a
    /// cluster may configure it: the first makes the stream, the others check it.
    pub fn history(mut self, history: History) -> Self {
        if let Err(error) = history.check() {
            self.refuse(error);
        }
        self.history = Some(history);
        self
    }

    fn refuse(&mut self, error: BridgeError) {
        self.invalid.get_or_insert(error);
    }

    /// `E`'s wire name, checked and not registered twice in the same direction.
    fn register<E: RemoteEvent>(&mut self, export: bool) -> Option<WireName> {
        let name = match WireName::of::<E>() {
            Ok(name) => name,
            Err(error) => {
                self.refuse(error);
                return None;
            }
        };
        let twice = if export {
            self.exports.iter().any(|(n, ..)| n.name == name.name)
        } else {
            self.imports.iter().any(|i| i.name.name == name.name)
        };
        if twice {
            self.refuse(BridgeError::InvalidName {
                name: name.name,
                reason: format!(
                    "is {} twice (two types with one wire name, or one type registered twice)",
                    if export { "exported" } else { "imported" }
                ),
            });
            return None;
        }
        Some(name)
    }

    /// Connects, subscribes, and starts the bridge as a task of the current scope.
    ///
    /// When it returns, every exported type is subscribed on the bus and every imported
    /// subject is subscribed on the server (a round trip has confirmed it).
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`] / [`InvalidConfig`](BridgeError::InvalidConfig) for what
    /// the builder refused, [`BridgeError::NoScope`] outside of a scope,
    /// [`BridgeError::ScopeFinished`] from a finished scope, [`BridgeError::Connect`] or
    /// [`BridgeError::Timeout`] when no server answers (see
    /// [`retry_on_initial_connect`](Self::retry_on_initial_connect)),
    /// [`BridgeError::Subscribe`] when the server refuses a subscription.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes installs nothing: the bridge's task is
    /// started only at the very end, the connection made so far is closed, and the export
    /// subscriptions are not made yet.
    pub async fn install(self) -> Result<BridgeHandle, BridgeError> {
        if let Some(error) = self.invalid {
            return Err(error);
        }
        let frame = context::current().ok_or(BridgeError::NoScope)?;
        if frame.is_finished() {
            return Err(BridgeError::ScopeFinished);
        }
        let counters = Arc::new(Counters::default());
        let (connected, connection) = tokio::sync::watch::channel(true);
        let instance = instance_id();
        let node: Arc<str> = match self.node {
            Some(node) => node.into(),
            None => format!("node-{}", &instance[..8]).into(),
        };
        let client = connect(
            self.options.unwrap_or_default(),
            &self.servers,
            &node,
            &counters,
            connected,
            self.retry_initial,
            self.connect_timeout,
        )
        .await?;
        let mut subscribers = Vec::with_capacity(self.imports.len());
        for (index, import) in self.imports.iter().enumerate() {
            if import.delivery == Delivery::Persistent {
                continue; // read from the stream by a durable consumer (the inbound loop)
            }
            let subject = import.name.subject(&self.prefix);
            let subscriber = client
                .subscribe(subject)
                .await
                .map_err(|e| BridgeError::Subscribe(e.to_string()))?;
            subscribers.push((index, subscriber));
        }
        let presence = client
            .subscribe(format!("{}.node.>", self.prefix))
            .await
            .map_err(|e| BridgeError::Subscribe(e.to_string()))?;
        if !self.retry_initial {
            round_trip(&client, &instance, self.connect_timeout).await?;
        }
        let persistent = self
            .exports
            .iter()
            .any(|(_, d, _)| *d == Delivery::Persistent)
            || self
                .imports
                .iter()
                .any(|i| i.delivery == Delivery::Persistent);
        let history = match self.history {
            None if persistent => Some(History::default()),
            history => history,
        };
        let jetstream = match history {
            Some(config) => {
                let context = async_nats::jetstream::new(client.clone());
                let stream = history::ensure_stream(&context, &config, &self.prefix).await?;
                Some(JetStream {
                    context,
                    stream,
                    config,
                })
            }
            None => None,
        };
        if let Some(JetStream { stream, .. }) = &jetstream {
            for import in &self.imports {
                if import.delivery == Delivery::Persistent {
                    let durable = persistent::durable_name(&node, &import.name.name);
                    let subject = import.name.subject(&self.prefix);
                    persistent::durable_consumer(stream, &durable, &subject)
                        .await
                        .map_err(BridgeError::Stream)?;
                }
            }
        }
        let server_max = client.server_info().max_payload;
        let shared = Arc::new(Shared {
            client,
            node,
            instance,
            prefix: self.prefix,
            queue: self.queue,
            counters,
            publish_timeout: self.publish_timeout,
            drain_timeout: self.drain_timeout,
            max_payload: if server_max == 0 {
                self.max_payload
            } else {
                self.max_payload.min(server_max)
            },
            frame: frame.clone(),
            stopped: CancellationToken::new(),
            logged: Mutex::new(Vec::new()),
            remote_scopes: Mutex::new(HashMap::new()),
            lag_reported: Mutex::new(None),
            heartbeat: self.heartbeat,
            started: SystemTime::now(),
            presence_seq: AtomicU64::new(0),
            jetstream,
        });
        // Ends when the scope's body completes, like every subscription made in the scope.
        let stop = crate::ctx::try_subscribe::<Stop>().map_err(|_| BridgeError::ScopeFinished)?;
        let exporters = self
            .exports
            .into_iter()
            .map(|(_, _, start)| start(&shared))
            .collect::<Result<Vec<_>, _>>()?;
        shared.announce(Kind::Joined).await;
        let inbound = inbound_loop(
            shared.clone(),
            self.imports,
            subscribers,
            presence,
            connection,
            Recent::new(self.dedup_window),
        );
        let task = run(shared.clone(), stop, exporters, inbound);
        crate::spawn::spawn_in(&frame, task).map_err(|_| BridgeError::ScopeFinished)?;
        Ok(BridgeHandle { shared })
    }
}

/// Never sent: its subscription's end tells the bridge's task that the scope's body is done.
struct Stop;

async fn connect(
    options: ConnectOptions,
    servers: &str,
    node: &str,
    counters: &Arc<Counters>,
    connected: tokio::sync::watch::Sender<bool>,
    retry: bool,
    timeout: Duration,
) -> Result<Client, BridgeError> {
    let seen = counters.clone();
    let connected = Arc::new(connected);
    let connected_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = options
        .name(format!("scopebus-{node}"))
        .event_callback(move |event| {
            let (counters, connected_once) = (seen.clone(), connected_once.clone());
            let connected = connected.clone();
            async move {
                match &event {
                    Event::Connected => connected.send_replace(true),
                    Event::Disconnected => connected.send_replace(false),
                    _ => false,
                };
                match event {
                    Event::Connected if connected_once.swap(true, Ordering::Relaxed) => {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Disconnected => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::SlowConsumer(_) => {
                        counters.slow_consumer.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                tracing::debug!(%event, "nats connection event");
            }
        });
    if retry {
        return options
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .map_err(|e| BridgeError::Connect(e.to_string()));
    }
    match tokio::time::timeout(timeout, options.connect(servers)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(BridgeError::Connect(error.to_string())),
        Err(_) => Err(BridgeError::Timeout("connect")),
    }
}

/// A request nobody answers: the server has processed every earlier SUB of this connection
/// when the "no responders" answer comes back (`flush` only writes the socket).
async fn round_trip(client: &Client, instance: &str, timeout: Duration) -> Result<(), BridgeError> {
    let request = client.request(format!("_scopebus.sync.{instance}"), bytes::Bytes::new());
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Ok(Err(error)) => Err(BridgeError::Subscribe(error.to_string())),
        Err(_) => Err(BridgeError::Timeout("subscribe")),
    }
}

/// A random 128-bit id in hex, new at every start: std's `RandomState` keys come from the
/// operating system, and the time and process id keep two processes apart even if not.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (0..2u8)
        .map(|half| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(now);
            hasher.write_u32(std::process::id());
            hasher.write_u8(half);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// What the bridge's task and its handles share.
struct Shared {
    client: Client,
    node: Arc<str>,
    instance: String,
    prefix: String,
    queue: ExportQueue,
    counters: Arc<Counters>,
    publish_timeout: Duration,
    drain_timeout: Duration,
    max_payload: usize,
    frame: Arc<Frame>,
    /// Cancelled when the scope's body is done.
    stopped: CancellationToken,
    /// When each counter was last logged (leaf lock).
    logged: Mutex<Vec<(&'static str, Instant)>>,
    /// Remote scopes by (instance, scope name), so that their events share one identity.
    remote_scopes: Mutex<HashMap<(String, String), Arc<ScopeInfo>>>,
    /// When the last `BridgeLagging` was published.
    lag_reported: Mutex<Option<Instant>>,
    heartbeat: Duration,
    started: SystemTime,
    /// Numbers presence messages, for their ids.
    presence_seq: AtomicU64,
    /// The history stream, when configured (or needed by a persistent type).
    jetstream: Option<JetStream>,
}

/// The JetStream side of a bridge: its context, and the history stream with its settings.
struct JetStream {
    context: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    config: History,
}

/// How many remote scopes are remembered before the table starts over.
const REMOTE_SCOPES: usize = 1024;

impl Shared {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs a warning for `what`, at most once per 10 s per `what`.
    fn warn(&self, what: &'static str, detail: impl fmt::Display) {
        let now = Instant::now();
        {
            let mut logged = lock(&self.logged);
            match logged.iter_mut().find(|(name, _)| *name == what) {
                Some((_, at)) if now.duration_since(*at) < Duration::from_secs(10) => return,
                Some((_, at)) => *at = now,
                None => logged.push((what, now)),
            }
        }
        tracing::warn!(node = %self.node, "nats bridge: {what}: {detail} (logged at most every 10 s)");
    }

    fn remote_scope(&self, meta: &Meta) -> Arc<ScopeInfo> {
        let mut scopes = lock(&self.remote_scopes);
        let key = (meta.origin.clone(), meta.scope.clone());
        if let Some(info) = scopes.get(&key) {
            return info.clone();
        }
        if scopes.len() >= REMOTE_SCOPES {
            scopes.clear();
        }
        let info = Arc::new(ScopeInfo::remote(
            Arc::from(meta.node.as_str()),
            meta.scope.clone(),
        ));
        scopes.insert(key, info.clone());
        info
    }

    /// Serializes one locally originated event and writes its headers; `None` (counted) if it
    /// cannot go out.
    fn prepare<E: RemoteEvent>(
        &self,
        subject: &str,
        name: &WireName,
        seq: u64,
        envelope: &Envelope<E>,
        persistent: bool,
    ) -> Option<Outgoing> {
        let payload = match serde_json::to_vec(&**envelope) {
            Ok(payload) => payload,
            Err(error) => {
                self.count(&self.counters.encode_error);
                self.warn("an event could not be serialized", error);
                return None;
            }
        };
        if payload.len() > self.max_payload {
            self.count(&self.counters.oversize);
            self.warn(
                "an exported payload is over the size limit",
                format_args!(
                    "{} bytes > {} on {subject}",
                    payload.len(),
                    self.max_payload
                ),
            );
            return None;
        }
        let meta = Meta {
            origin: self.instance.clone(),
            node: self.node.to_string(),
            scope: envelope.origin().name().to_owned(),
            type_name: name.name.clone(),
            version: name.version,
            id: format!("{}-{}", self.instance, envelope.seq()),
            seq,
            sent_at: envelope.sent_at(),
        };
        let (headers, cleaned) = wire::encode(&meta, persistent);
        if cleaned {
            self.count(&self.counters.header_cleaned);
            self.warn(
                "a header value held control characters (replaced by spaces)",
                &meta.scope,
            );
        }
        Some(Outgoing {
            subject: subject.to_owned(),
            headers,
            payload: payload.into(),
        })
    }

    /// Publishes one event on core NATS.
    async fn publish_core(&self, out: Outgoing) {
        if self.publish_timed(out, "an event").await {
            self.count(&self.counters.exported);
        }
    }

    /// Publishes on core NATS within the publish timeout; a failure or a timeout is counted
    /// and logged (`what` was being published). `true` if the client took it.
    async fn publish_timed(&self, out: Outgoing, what: &'static str) -> bool {
        let publish =
            self.client
                .publish_with_headers(out.subject.clone(), out.headers, out.payload);
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                self.count(&self.counters.publish_error);
                self.warn(
                    "a publish failed",
                    format_args!("{what} on {}: {error}", out.subject),
                );
                false
            }
            Err(_) => {
                self.count(&self.counters.publish_timeout);
                self.warn(
                    "a publish timed out",
                    format_args!("{what} on {}", out.subject),
                );
                false
            }
        }
    }

    /// Counts how a persistent publish ended.
    fn acked(&self, outcomes: Vec<Acked>) {
        for outcome in outcomes {
            match outcome {
                Acked::Stored => self.count(&self.counters.exported),
                Acked::Lost { timed_out, error } => {
                    self.count(if timed_out {
                        &self.counters.publish_timeout
                    } else {
                        &self.counters.publish_error
                    });
                    self.warn(
                        "a persistent publish was not stored after every retry",
                        error,
                    );
                }
            }
        }
    }

    /// Publishes this node's presence message of `kind` (with a timeout; failures are counted
    /// like any publish).
    async fn announce(&self, kind: Kind) {
        let said = presence::announcement(
            &self.node,
            &self.instance,
            self.heartbeat,
            self.started,
            &self.counters.snapshot(),
        );
        let Ok(payload) = serde_json::to_vec(&said) else {
            return self.count(&self.counters.encode_error);
        };
        let n = self.presence_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = Meta {
            origin: self.instance.clone(),
            node: self.node.to_string(),
            scope: self.frame.info().name().to_owned(),
            type_name: format!("node.{}", kind.name()),
            version: 1,
            id: format!("{}-p{n}", self.instance),
            seq: n,
            sent_at: SystemTime::now(),
        };
        let (headers, _) = wire::encode(&meta, false);
        let out = Outgoing {
            subject: kind.subject(&self.prefix, &self.node),
            headers,
            payload: payload.into(),
        };
        self.publish_timed(out, "a presence message").await;
    }

    /// Publishes a local event on the bridge's bus, from the bridge's scope.
    fn publish_local<T: Send + Sync + 'static>(&self, event: T) {
        self.frame.bus.publish(self.frame.info(), event);
    }

    /// Counts what an export queue dropped since `counted` (which it updates).
    fn count_drops<E: Send + Sync + 'static>(&self, queue: &Subscription<E>, counted: &mut u64) {
        // Read once: the bus's senders may drop more meanwhile.
        let now = queue.dropped();
        if now > *counted {
            self.dropped(now - *counted);
            *counted = now;
        }
    }

    /// Counts `more` events dropped by an export queue and says so on the bus (at most once a
    /// second).
    fn dropped(&self, more: u64) {
        let total = self
            .counters
            .dropped_backpressure
            .fetch_add(more, Ordering::Relaxed)
            + more;
        let now = Instant::now();
        {
            let mut last = lock(&self.lag_reported);
            if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
                return;
            }
            *last = Some(now);
        }
        self.warn("exported events dropped: NATS does not keep up", total);
        let frame = &self.frame;
        frame.bus.publish(
            frame.info(),
            BridgeLagging {
                node: self.node.to_string(),
                dropped: total,
            },
        );
    }
}

/// The bridge's task: import until the scope's body is done, export until the export
/// subscriptions have ended (or the drain deadline), then drain the connection.
async fn run(
    shared: Arc<Shared>,
    mut stop: Subscription<Stop>,
    exporters: Vec<BoxFuture<'static, ()>>,
    importer: impl Future<Output = ()>,
) {
    let watch_stop = async {
        while stop.next().await.is_some() {}
        shared.stopped.cancel();
    };
    tokio::join!(watch_stop, importer, join_all(exporters));
    // Every exported event has been published (or counted): now say goodbye, then close.
    shared.announce(Kind::Left).await;
    // `drain` may close the connection before what is queued is written: flush first.
    let _ = tokio::time::timeout(shared.publish_timeout, shared.client.flush()).await;
    let _ = tokio::time::timeout(shared.publish_timeout, shared.client.drain()).await;
}

/// Publishes `E`'s locally originated events until the subscription ends, or until the drain
/// deadline once the scope's body is done.
async fn export_loop<E: RemoteEvent>(
    mut subscription: Subscription<E>,
    shared: Arc<Shared>,
    name: WireName,
    delivery: Delivery,
) {
    let subject = name.subject(&shared.prefix);
    let deadline = async {
        shared.stopped.cancelled().await;
        tokio::time::sleep(shared.drain_timeout).await;
    };
    tokio::pin!(deadline);
    let mut window = match (delivery, &shared.jetstream) {
        (Delivery::Persistent, Some(jetstream)) => Some(AckWindow::new(
            jetstream.context.clone(),
            shared.publish_timeout,
        )),
        _ => None,
    };
    let mut dropped = 0;
    let mut late = false;
    let mut seq = 0;
    loop {
        let pending = window.as_ref().is_some_and(|w| w.len() > 0);
        let envelope = tokio::select! {
            biased;
            next = subscription.next() => match next {
                Some(envelope) => envelope,
                None => break,
            },
            () = &mut deadline => { late = true; break; }
            // Nothing to send: settle the acknowledgements that came meanwhile (waiting for
            // one takes nothing out of the window, so the next event may interrupt it).
            () = answered(&mut window), if pending => {
                if let Some(window) = &mut window {
                    shared.acked(window.settle_oldest().await.into_iter().collect());
                }
                continue;
            }
        };
        shared.count_drops(&subscription, &mut dropped);
        if envelope.origin().node().is_some() {
            continue; // imported: never sent out again
        }
        // Counted before the attempt: an event lost here is a gap for the receivers too.
        seq += 1;
        let Some(out) = shared.prepare(&subject, &name, seq, &envelope, window.is_some()) else {
            continue;
        };
        let publish = async {
            match &mut window {
                Some(window) => shared.acked(window.publish(out).await),
                None => shared.publish_core(out).await,
            }
        };
        tokio::select! {
            biased;
            () = publish => {}
            () = &mut deadline => {
                shared.counters.abandoned_at_shutdown.fetch_add(1, Ordering::Relaxed);
                late = true;
                break;
            }
        }
    }
    // Persistent: wait for the acknowledgements still pending (within the deadline too).
    if let Some(window) = &mut window {
        while !late && window.len() > 0 {
            tokio::select! {
                biased;
                settled = window.settle_oldest() => shared.acked(settled.into_iter().collect()),
                () = &mut deadline => late = true,
            }
        }
        let unsure = window.len() as u64;
        if unsure > 0 {
            // Published, but not known to be stored.
            shared
                .counters
                .abandoned_at_shutdown
                .fetch_add(unsure, Ordering::Relaxed);
        }
    }
    shared.count_drops(&subscription, &mut dropped);
    if late {
        let left = subscription
            .drain()
            .iter()
            .filter(|envelope| envelope.origin().node().is_none())
            .count();
        if left > 0 {
            shared
                .counters
                .abandoned_at_shutdown
                .fetch_add(left as u64, Ordering::Relaxed);
            shared.warn("exported events abandoned at the drain deadline", left);
        }
    }
}

/// Waits for the answer to the oldest pending persistent publish (cancel-safe).
async fn answered(window: &mut Option<AckWindow>) {
    if let Some(window) = window {
        window.answered().await;
    }
}

/// What the importer remembers: the ids of the last `capacity` events, and the last `Ev-Seq`
/// of each sender and type.
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    last: HashMap<(String, String), u64>,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            last: HashMap::new(),
        }
    }

    /// How many events of `meta`'s sender and type were skipped before this one. The first
    /// event seen from a sender sets the start: what it sent before this bridge listened is
    /// not lost.
    fn gap(&mut self, meta: &Meta) -> u64 {
        let key = (meta.origin.clone(), meta.type_name.clone());
        if self.last.len() >= REMOTE_SCOPES && !self.last.contains_key(&key) {
            self.last.clear(); // bounded: a gap across the reset goes unseen
        }
        match self.last.get_mut(&key) {
            None => {
                self.last.insert(key, meta.seq);
                0
            }
            Some(last) => {
                let gap = meta.seq.saturating_sub(*last + 1);
                *last = (*last).max(meta.seq);
                gap
            }
        }
    }

    /// `false` if `id` is among the recent ones; remembers it otherwise.
    fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Receives imported events and presence messages until the scope's body is done, says the
/// node is alive every heartbeat, and counts silent nodes as gone. Imported events are taken
/// first whenever both are ready (see `presence.rs` for why).
async fn inbound_loop(
    shared: Arc<Shared>,
    imports: Vec<Import>,
    subscribers: Vec<(usize, Subscriber)>,
    mut presence: Subscriber,
    mut connection: tokio::sync::watch::Receiver<bool>,
    mut recent: Recent,
) {
    let mut messages = futures::stream::select_all(
        subscribers
            .into_iter()
            .map(|(index, subscriber)| subscriber.map(move |message| (index, message))),
    );
    let mut durable =
        futures::stream::select_all(imports.iter().enumerate().filter_map(|(index, import)| {
            let stream = shared.jetstream.as_ref()?.stream.clone();
            (import.delivery == Delivery::Persistent).then(|| {
                let name = persistent::durable_name(&shared.node, &import.name.name);
                let subject = import.name.subject(&shared.prefix);
                persistent::durable_messages(stream, name, subject)
                    .map(move |message| (index, message))
            })
        }));
    let mut peers = Peers::new(shared.instance.clone(), shared.prefix.clone());
    let mut ticks = tokio::time::interval(shared.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: `joined` was just sent
    loop {
        tokio::select! {
            biased;
            () = shared.stopped.cancelled() => break,
            Some((index, message)) = messages.next() => {
                receive(&shared, &imports[index], &message, &mut recent);
            }
            Some((index, message)) = durable.next() => {
                receive(&shared, &imports[index], &message.message, &mut recent);
                // Acknowledged once in the bus (or refused and counted): a restart resumes
                // after it.
                match tokio::time::timeout(shared.publish_timeout, message.ack()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        shared.count(&shared.counters.ack_error);
                        shared.warn("an imported event could not be acknowledged", &message.subject);
                    }
                }
            }
            Some(message) = presence.next() => hear(&shared, &mut peers, &message).await,
            _ = ticks.tick() => {
                shared.announce(Kind::Health).await;
                for left in peers.expire(Instant::now()) {
                    shared.publish_local(left);
                }
            }
            Ok(()) = connection.changed() => {
                if !*connection.borrow_and_update() {
                    for left in peers.lose_all() {
                        shared.publish_local(left);
                    }
                }
            }
        }
    }
}

/// One presence message: updates what is known of the other nodes and says so on the bus.
async fn hear(shared: &Shared, peers: &mut Peers, message: &Message) {
    match peers.hear(message, Instant::now()) {
        Ok(None) => {}
        Ok(Some(heard)) => {
            if let Some(joined) = heard.joined {
                shared.publish_local(joined);
            }
            if let Some(health) = heard.health {
                shared.publish_local(health);
            }
            if let Some(left) = heard.left {
                shared.publish_local::<NodeLeft>(left);
            }
            if heard.answer {
                shared.announce(Kind::Health).await;
            }
        }
        Err(Refused::UnknownKind) => {
            shared.count(&shared.counters.unknown_type);
            shared.warn("a presence message of unknown kind", &message.subject);
        }
        Err(Refused::Payload) => {
            shared.count(&shared.counters.decode_error);
            shared.warn("a presence message could not be decoded", &message.subject);
        }
    }
}

/// Checks one imported message and sends it into the bus; counts whatever is refused.
///
/// The headers come first: a message whose headers are readable counts in its sender's
/// sequence even if its payload is then refused, so that a refused message is counted once,
/// for what was wrong with it, and never also as lost.
fn receive(shared: &Shared, import: &Import, message: &Message, recent: &mut Recent) {
    let counters = &shared.counters;
    let meta = match wire::decode(message.headers.as_ref()) {
        Ok(meta) => meta,
        Err(error) => {
            shared.count(match error {
                WireError::MissingHeader(_) => &counters.missing_header,
                WireError::MalformedHeader(_) | WireError::UnknownCodec => {
                    &counters.malformed_header
                }
            });
            return shared.warn(
                "a message was refused",
                format_args!("{} on {}", error, message.subject),
            );
        }
    };
    if meta.origin == shared.instance {
        return shared.count(&counters.dropped_own_echo);
    }
    if !recent.insert(&meta.id) {
        return shared.count(&counters.dropped_duplicate);
    }
    // A persistent stream is stored whole: a jump in it is an event re-published after an
    // outage arriving after later ones, not a loss (its gap fills when it comes).
    let gap = match import.delivery {
        Delivery::BestEffort => recent.gap(&meta),
        Delivery::Persistent => 0,
    };
    if gap > 0 {
        counters.lost_in_transit.fetch_add(gap, Ordering::Relaxed);
        shared.warn(
            "events of another node were lost in transit",
            format_args!("{gap} of {} from {}", meta.type_name, meta.node),
        );
    }
    if message.payload.len() > shared.max_payload {
        shared.count(&counters.oversize);
        return shared.warn(
            "an imported payload is over the size limit",
            format_args!("{} bytes on {}", message.payload.len(), message.subject),
        );
    }
    if meta.type_name != import.name.name {
        shared.count(&counters.unknown_type);
        return shared.warn(
            "a message's type is not imported on its subject",
            format_args!("{} on {}", meta.type_name, message.subject),
        );
    }
    match (import.deliver)(shared, &meta, &message.payload) {
        Ok(()) => shared.count(&counters.imported),
        Err(Refusal::Decode(error)) => {
            shared.count(&counters.decode_error);
            shared.warn(
                "a payload could not be decoded",
                format_args!("{} on {}: {error}", meta.type_name, message.subject),
            );
        }
        Err(Refusal::Local) => shared.count(&counters.refused_locally),
    }
}

/// A history entry decoded as `E`, or `None` if its headers, type or payload are wrong.
fn stored<E: RemoteEvent>(raw: &RawEvent, type_name: &str) -> Option<Stored<E>> {
    if raw.type_name.as_deref() != Some(type_name) {
        return None;
    }
    Some(Stored {
        event: raw.decode::<E>().ok()?,
        node: raw.node.clone()?,
        scope: raw.scope.clone().unwrap_or_default(),
        sent_at: raw.sent_at?,
        id: raw.id.clone()?,
        stream_seq: raw.stream_seq?,
    })
}

/// An installed bridge (see [`Bridge::install`]). Cheap to clone; it does not keep the bridge
/// running: the bridge stops with the scope that installed it.
///
/// ```no_run
/// use futures::StreamExt;
/// use scopebus::{ctx, Bridge, History};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct PriceChanged { cents: u64 }
/// # impl scopebus::RemoteEvent for PriceChanged {
/// #     const KIND: &'static str = "market";
/// #     const NAME: &'static str = "price";
/// # }
///
/// # async fn demo() -> Result<(), scopebus::BridgeError> {
/// ctx::scope("ops").run(async {
///     let bridge = Bridge::new("nats://127.0.0.1:4222")
///         .history(History::new())
///         .install()
///         .await?;
///     // The newest 20 market events, oldest first, then the live ones.
///     for event in bridge.history("events.market.*", 20).await? {
///         println!("{event}");
///     }
///     let prices = bridge.history_of::<PriceChanged>(5).await?;
///     println!("last price: {:?}", prices.last().map(|p| p.event.cents));
///     let mut live = bridge.watch("events.market.*").await?;
///     while let Some(event) = live.next().await {
///         println!("{event}");
///     }
///     println!("{:?}", bridge.stats());
///     Ok(())
/// }).await
/// # }
/// ```
#[derive(Clone)]
pub struct BridgeHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("node", &self.shared.node)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl BridgeHandle {
    /// The node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// This bridge's instance id: 32 hex digits, new at every start, in every exported event's
    /// `Ev-Origin` header.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// The bridge's counters now.
    pub fn stats(&self) -> BridgeStats {
        self.shared.counters.snapshot()
    }

    /// The newest `limit` events kept in history on subjects matching `filter` (`*` one token,
    /// `>` the rest), oldest first, as raw envelopes. Every kept message counts, including
    /// those not sent by a bridge.
    ///
    /// # Errors
    ///
    /// [`BridgeError::NoHistory`] without [`Bridge::history`], [`BridgeError::InvalidPattern`],
    /// [`BridgeError::Timeout`] after the history's timeout, [`BridgeError::Stream`] when
    /// JetStream fails.
    ///
    /// # Cancel safety
    ///
    /// Dropping a history query abandons it; the short-lived consumer it made is deleted by
    /// the server after 5 s without use. The same holds for every history method.
    pub async fn history(&self, filter: &str, limit: usize) -> Result<Vec<RawEvent>, BridgeError> {
        self.query(filter, history::Start::Everything, limit, Some)
            .await
    }

    /// Like [`history`](Self::history), among the events stored since `since`: the newest
    /// `limit` of them, oldest first. A `since` in the future gives none.
    ///
    /// # Errors
    ///
    /// As [`history`](Self::history).
    pub async fn history_since(
        &self,
        filter: &str,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<RawEvent>, BridgeError> {
        self.query(filter, history::Start::Since(since), limit, Some)
            .await
    }

    /// The newest `limit` events of type `E` kept in history, oldest first, decoded. Entries
    /// that do not decode as `E` are skipped, counted in [`BridgeStats::history_skipped`], and
    /// do not count towards `limit`.
    ///
    /// # Errors
    ///
    /// As [`history`](Self::history).
    pub async fn history_of<E: RemoteEvent>(
        &self,
        limit: usize,
    ) -> Result<Vec<Stored<E>>, BridgeError> {
        self.typed_query::<E>(history::Start::Everything, limit)
            .await
    }

    /// Like [`history_of`](Self::history_of), among the events stored since `since`.
    ///
    /// # Errors
    ///
    /// As [`history`](Self::history).
    pub async fn history_of_since<E: RemoteEvent>(
        &self,
        since: SystemTime,
        limit: usize,
    ) -> Result<Vec<Stored<E>>, BridgeError> {
        self.typed_query::<E>(history::Start::Since(since), limit)
            .await
    }

    async fn typed_query<E: RemoteEvent>(
        &self,
        from: history::Start,
        limit: usize,
    ) -> Result<Vec<Stored<E>>, BridgeError> {
        let name = WireName::of::<E>()?;
        let subject = name.subject(&self.shared.prefix);
        let counters = &self.shared.counters;
        let decode = |raw: RawEvent| {
            let stored = stored::<E>(&raw, &name.name);
            if stored.is_none() {
                counters.history_skipped.fetch_add(1, Ordering::Relaxed);
            }
            stored
        };
        self.query(&subject, from, limit, decode).await
    }

    async fn query<T>(
        &self,
        filter: &str,
        from: history::Start,
        limit: usize,
        accept: impl FnMut(RawEvent) -> Option<T>,
    ) -> Result<Vec<T>, BridgeError> {
        check_pattern(filter)?;
        let Some(jetstream) = &self.shared.jetstream else {
            return Err(BridgeError::NoHistory);
        };
        let mut stream = jetstream.stream.clone();
        let query = history::newest(&mut stream, filter, from, limit, accept);
        tokio::time::timeout(jetstream.config.timeout, query)
            .await
            .map_err(|_| BridgeError::Timeout("history"))?
    }

    /// The events of type `E` imported from `node`, ending when that node is gone: a
    /// [`LinkedSubscription`] yields every event of the node that reached the bus before its
    /// [`NodeLeft`], then ends, and its [`end_reason`](LinkedSubscription::end_reason) says
    /// why (it shut down, it missed heartbeats, or this node lost its connection). Made in the
    /// current scope, like [`ctx::subscribe`](crate::ctx::subscribe).
    ///
    /// # Errors
    ///
    /// [`BridgeError::ScopeFinished`] outside of a scope or from a finished one.
    pub fn subscribe_linked<E: RemoteEvent>(
        &self,
        node: &str,
    ) -> Result<LinkedSubscription<E>, BridgeError> {
        LinkedSubscription::new(node)
    }

    /// Every message published on subjects matching `pattern` (`*` one token, `>` the rest), as
    /// raw envelopes: for tools, dashboards and types this process does not know. Messages not
    /// sent by a bridge come too, with the header fields they lack left `None`.
    ///
    /// When it returns, the subscription is live on the server.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidPattern`] for a malformed pattern (nothing is sent to the server),
    /// [`BridgeError::Subscribe`] or [`BridgeError::Timeout`] if the server does not take it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the subscription it was making. Reading the returned stream
    /// is cancel-safe: a message is removed from it only when it is returned.
    pub async fn watch(&self, pattern: &str) -> Result<RawSubscription, BridgeError> {
        check_pattern(pattern)?;
        let shared = &self.shared;
        let subscriber = shared
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| BridgeError::Subscribe(e.to_string()))?;
        round_trip(
            &shared.client,
            &shared.instance,
            shared.publish_timeout.max(Duration::from_secs(5)),
        )
        .await?;
        Ok(RawSubscription {
            subscriber,
            done: false,
        })
    }
}

/// The stream of [`RawEvent`]s from [`BridgeHandle::watch`]. It ends when the bridge's
/// connection is closed (the bridge's scope ended) or the subscription is dropped.
pub struct RawSubscription {
    subscriber: Subscriber,
    done: bool,
}

impl fmt::Debug for RawSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSubscription").finish_non_exhaustive()
    }
}

impl Stream for RawSubscription {
    type Item = RawEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawEvent>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.subscriber.poll_next_unpin(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(RawEvent::new(
                message.subject.as_str(),
                message.headers.as_ref(),
                message.payload,
            ))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl FusedStream for RawSubscription {
    fn is_terminated(&self) -> bool {
        self.done
    }
}
