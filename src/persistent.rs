//! Persistent delivery over the NATS bridge (feature `nats`): [`Delivery`], the export side's
//! acknowledged publishes, and the import side's supervised durable consumer.
//!
//! - **Export.** A persistent type's events go through JetStream: each publish carries
//!   `Nats-Msg-Id` (the event id), and up to [`WINDOW`] acknowledgements are awaited at once.
//!   A publish that is not acknowledged (a timeout, a broken connection, a stream not found
//!   during a restart) is published again with the same id (the stream's duplicate window
//!   drops it if the first one was stored after all: a timed-out ack is ambiguous), up to
//!   [`ATTEMPTS`] times with a growing pause; then it is counted as lost. A final refusal (a
//!   full stream that discards new messages, a payload over the limit) is counted at once.
//! - **Import.** A durable pull consumer per node and type (`scopebus-<node>-<kind>-<name>`)
//!   keeps, on the server, how far the node has read: a bridge that restarts with the same
//!   node name, or a server that restarts with its store, resumes after the last event
//!   acknowledged. Each message is acknowledged once it has been sent into the bus (or
//!   refused and counted), so a restart neither skips nor repeats an event; only a process
//!   killed between the two can see an event again (at least once). The consumer's stream is
//!   supervised: an error or its end makes the bridge open it again, after a pause that grows
//!   from 50 ms to 1 s, until the scope ends.
//!
//! Invariants: never more than `WINDOW` acknowledgements pending per exported type (async-nats
//! deadlocks past 5 000 un-awaited ones, NATS-NOTES §6.4); the importer holds no lock across
//! an `await`.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self as js, Context};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

/// How an exported or imported type crosses NATS.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct PriceChanged { cents: u64 }
/// # impl scopebus::RemoteEvent for PriceChanged {
/// #     const KIND: &'static str = "market";
/// #     const NAME: &'static str = "price";
/// # }
/// use scopebus::{Bridge, Delivery, History};
///
/// // Every price is stored; the other side reads them through a durable consumer.
/// let pricing = Bridge::new("nats://127.0.0.1:4222")
///     .node("pricing")
///     .history(History::new())
///     .export_with::<PriceChanged>(Delivery::Persistent);
/// let dashboard = Bridge::new("nats://127.0.0.1:4222")
///     .node("dashboard")
///     .import_with::<PriceChanged>(Delivery::Persistent);
/// # drop((pricing, dashboard));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Delivery {
    /// Core NATS: the lowest latency, at most once. Events published while a receiver is
    /// disconnected are lost, and the receiver counts them
    /// ([`BridgeStats::lost_in_transit`](crate::BridgeStats::lost_in_transit)).
    #[default]
    BestEffort,
    /// JetStream: every event is stored (acknowledged, retried with its id), and a receiver
    /// reads from the stream through a durable consumer, so it resumes without gaps or
    /// duplicates after a server restart or its own restart. Order is kept, except that an
    /// event whose publish was lost with the connection is re-published after the events the
    /// client sent on reconnecting, and arrives after them. Needs the history stream
    /// ([`Bridge::history`](crate::Bridge::history); the default one is made if none is
    /// configured).
    Persistent,
}

/// Acknowledgements awaited at once per exported type.
pub(crate) const WINDOW: usize = 256;
/// Publishes of one event before it is counted as lost.
pub(crate) const ATTEMPTS: u32 = 4;

/// One event on its way into the stream.
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

/// How one persistent publish ended.
pub(crate) enum Acked {
    Stored,
    /// Not acknowledged after every attempt (`true`: the last attempt timed out).
    Lost {
        timed_out: bool,
        error: String,
    },
}

type AckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// A publish waiting for its acknowledgement, or answered.
enum Ack {
    Waiting(AckFuture),
    Answered(Result<(), Refusal>),
}

/// Why a publish was not stored, and whether trying again may help.
struct Refusal {
    error: String,
    /// A timeout, a broken connection, a stream not (yet) found during a restart: maybe
    /// stored after all, or storable soon. Anything else (a full stream that discards new
    /// messages, a payload over the limit) is final.
    retry: bool,
}

impl Refusal {
    fn of(error: &PublishError) -> Self {
        let retry = matches!(
            error.kind(),
            PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::MaxAckPending
                | PublishErrorKind::StreamNotFound
        );
        Self {
            error: error.to_string(),
            retry,
        }
    }

    fn timed_out() -> Self {
        Self {
            error: "no acknowledgement in time".to_owned(),
            retry: true,
        }
    }
}

/// The acknowledgements a persistent export waits for.
///
/// Cancel safety: [`answered`](Self::answered) only polls the oldest acknowledgement and keeps
/// its answer, so the export loop can race it against the next event and lose nothing.
pub(crate) struct AckWindow {
    js: Context,
    pending: VecDeque<(Outgoing, Ack)>,
    timeout: Duration,
}

impl AckWindow {
    pub(crate) fn new(js: Context, timeout: Duration) -> Self {
        Self {
            js,
            pending: VecDeque::new(),
            timeout,
        }
    }

    /// Publishes `out`; once the window is full, first settles the oldest publish. Returns
    /// the outcomes settled meanwhile (none, or one or two).
    pub(crate) async fn publish(&mut self, out: Outgoing) -> Vec<Acked> {
        let mut settled = Vec::new();
        if self.pending.len() >= WINDOW {
            settled.extend(self.settle_oldest().await);
        }
        match self.send(&out).await {
            Ok(ack) => self.pending.push_back((out, Ack::Waiting(ack))),
            // Not even handed to the client: retried at once.
            Err(_) => settled.push(self.retry(&out, 1).await),
        }
        settled
    }

    async fn send(&mut self, out: &Outgoing) -> Result<AckFuture, String> {
        let publish = self.js.publish_with_headers(
            out.subject.clone(),
            out.headers.clone(),
            out.payload.clone(),
        );
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(ack)) => Ok(ack.into_future()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("publish timed out".to_owned()),
        }
    }

    /// Waits until the oldest pending publish has its answer (or its time is up), and keeps
    /// it. Cancel-safe; returns at once if there is none or it is answered.
    pub(crate) async fn answered(&mut self) {
        let timeout = self.timeout;
        let Some((_, ack)) = self.pending.front_mut() else {
            return;
        };
        if let Ack::Waiting(future) = ack {
            let answer = match tokio::time::timeout(timeout, future.as_mut()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(Refusal::of(&error)),
                Err(_) => Err(Refusal::timed_out()),
            };
            *ack = Ack::Answered(answer);
        }
    }

    /// Settles the oldest pending publish, if any: waits for its answer, and publishes it
    /// again if it was not stored.
    pub(crate) async fn settle_oldest(&mut self) -> Option<Acked> {
        self.answered().await;
        let (out, ack) = self.pending.pop_front()?;
        match ack {
            Ack::Answered(Ok(())) => Some(Acked::Stored),
            Ack::Answered(Err(refusal)) if !refusal.retry => Some(Acked::Lost {
                timed_out: false,
                error: refusal.error,
            }),
            _ => Some(self.retry(&out, 1).await),
        }
    }

    /// Publishes `out` again (same `Nats-Msg-Id`) and waits for its ack, up to `ATTEMPTS`.
    async fn retry(&mut self, out: &Outgoing, done: u32) -> Acked {
        let mut last = Acked::Lost {
            timed_out: true,
            error: String::new(),
        };
        for attempt in done..ATTEMPTS {
            let pause = Duration::from_millis(100 << attempt.min(4)).min(Duration::from_secs(1));
            tokio::time::sleep(pause).await;
            let ack = match self.send(out).await {
                Ok(ack) => ack,
                Err(error) => {
                    last = Acked::Lost {
                        timed_out: error.contains("timed out"),
                        error,
                    };
                    continue;
                }
            };
            match tokio::time::timeout(self.timeout, ack).await {
                Ok(Ok(_)) => return Acked::Stored,
                Ok(Err(error)) => {
                    let refusal = Refusal::of(&error);
                    last = Acked::Lost {
                        timed_out: false,
                        error: refusal.error,
                    };
                    if !refusal.retry {
                        return last;
                    }
                }
                Err(_) => {
                    last = Acked::Lost {
                        timed_out: true,
                        error: "no acknowledgement in time".to_owned(),
                    }
                }
            }
        }
        last
    }

    /// How many publishes await their acknowledgement.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

/// The durable consumer's name for `node` importing `type_name` (`kind.name`).
pub(crate) fn durable_name(node: &str, type_name: &str) -> String {
    format!("scopebus-{node}-{}", type_name.replace('.', "-"))
}

/// Makes (or finds) the durable consumer, at install: it must exist before `install` returns,
/// since it delivers only what is published after it was first made.
pub(crate) async fn durable_consumer(
    stream: &js::stream::Stream,
    durable: &str,
    subject: &str,
) -> Result<(), String> {
    consumer(stream, durable, subject).await.map(drop)
}

/// A durable consumer's messages, opened again after every error or end, until dropped.
pub(crate) fn durable_messages(
    stream: js::stream::Stream,
    durable: String,
    subject: String,
) -> BoxStream<'static, js::Message> {
    struct State {
        stream: js::stream::Stream,
        durable: String,
        subject: String,
        messages: Option<js::consumer::pull::Stream>,
        failures: u32,
    }
    let state = State {
        stream,
        durable,
        subject,
        messages: None,
        failures: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.messages.is_none() {
                if state.failures > 0 {
                    let pause = Duration::from_millis(50 * u64::from(state.failures.min(20)));
                    tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
                }
                let opened = match consumer(&state.stream, &state.durable, &state.subject).await {
                    Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
                    Err(error) => Err(error),
                };
                match opened {
                    Ok(messages) => state.messages = Some(messages),
                    Err(error) => {
                        state.failures += 1;
                        tracing::debug!(%error, durable = %state.durable, "opening a durable consumer failed; retrying");
                        continue;
                    }
                }
            }
            let messages = state.messages.as_mut().expect("just opened");
            match messages.next().await {
                Some(Ok(message)) => {
                    state.failures = 0;
                    return Some((message, state));
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, durable = %state.durable, "a durable consumer failed; reopening");
                    state.messages = None;
                    state.failures += 1;
                }
                None => {
                    state.messages = None;
                    state.failures += 1;
                }
            }
        }
    })
    .boxed()
}

async fn consumer(
    stream: &js::stream::Stream,
    durable: &str,
    subject: &str,
) -> Result<js::consumer::Consumer<pull::Config>, String> {
    let config = pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject: subject.to_owned(),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(10),
        max_ack_pending: 1024,
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        stream.get_or_create_consumer::<pull::Config>(durable, config),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())
}
