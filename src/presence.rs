//! Node presence over the NATS bridge (feature `nats`): [`NodeJoined`], [`NodeLeft`],
//! [`NodeHealth`] as typed events on the bridge's bus, and [`LinkedSubscription`], a stream of
//! one node's events that tells why it ended when the node goes away.
//!
//! Protocol (subjects under the bridge's prefix, JSON payloads, the bridge's headers):
//! - `events.node.joined` once at start, `events.node.health.<node>` every heartbeat, and
//!   `events.node.left` at a clean shutdown, after the export queues are drained. Heartbeats
//!   have a fourth token so that the history stream (`events.*.*`) does not keep them: at one
//!   every 5 s per node they would soon be all the history there is;
//! - a node is *known* from its first `joined` or `health`; a `joined` from a node not yet known
//!   is answered with an immediate `health`, so that a newcomer learns of every node at once;
//! - a known node is gone when it says `left` (`Shutdown`), when three of its heartbeat
//!   intervals pass without a word from it (`MissedHeartbeats`), or, for every known node at
//!   once, when this bridge's own connection is lost (`ConnectionLost`, seed 000's "no
//!   connection"). Its next `joined` or `health` makes it known again.
//!
//! Invariants: presence messages and imported events are read by the same loop, imported
//! events first whenever both are ready. A node's events are published before its `left` on
//! the same connection, so the server delivers them first and the client queues them first:
//! on the bus, a node's imported events come before its `NodeLeft`, which is what lets a
//! [`LinkedSubscription`] yield all of them before it ends.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use async_nats::Message;
use futures::stream::{FusedStream, Stream};
use serde::{Deserialize, Serialize};

use crate::error::BridgeError;
use crate::event::AnyEnvelope;
use crate::event::Envelope;
use crate::subscription::{AnySubscription, EndReason};

/// Published on the bridge's bus when another node becomes known: it announced itself, or it
/// was heard from again after it was counted as gone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeJoined {
    /// The node's name.
    pub node: String,
    /// The node's bridge instance id (new at each start).
    pub instance: String,
}

/// Why a node is counted as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeLeftReason {
    /// It said so: its bridge's scope ended cleanly.
    Shutdown,
    /// Three of its heartbeat intervals passed without a word from it.
    MissedHeartbeats,
    /// This bridge's own connection to NATS was lost: no node can be heard (seed 000's "no
    /// connection"). Nodes rejoin when their next heartbeat comes through.
    ConnectionLost,
}

impl fmt::Display for NodeLeftReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeLeftReason::Shutdown => "it shut down",
            NodeLeftReason::MissedHeartbeats => "it missed three heartbeats",
            NodeLeftReason::ConnectionLost => "this node lost its connection to NATS",
        })
    }
}

/// Published on the bridge's bus when a known node is counted as gone.
///
/// ```no_run
/// use futures::StreamExt;
/// use scopebus::{ctx, Bridge, NodeJoined, NodeLeft};
///
/// # async fn demo() {
/// ctx::scope("watcher").run(async {
///     let mut joined = ctx::subscribe::<NodeJoined>();
///     let mut left = ctx::subscribe::<NodeLeft>();
///     let _bridge = Bridge::new("nats://127.0.0.1:4222").install().await.unwrap();
///     let node = joined.next().await.unwrap();
///     println!("{} joined", node.node);
///     let gone = left.next().await.unwrap();
///     println!("{} left: {}", gone.node, gone.reason);
/// }).await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeLeft {
    /// The node's name.
    pub node: String,
    /// The node's bridge instance id.
    pub instance: String,
    /// Why.
    pub reason: NodeLeftReason,
}

/// Published on the bridge's bus for every heartbeat of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// The node's name.
    pub node: String,
    /// The node's bridge instance id.
    pub instance: String,
    /// How long its bridge has run.
    pub uptime: Duration,
    /// Its heartbeat interval.
    pub heartbeat: Duration,
    /// Events it has exported so far.
    pub exported: u64,
    /// Events it has imported so far.
    pub imported: u64,
    /// Events its export queues dropped so far (NATS too slow for it).
    pub dropped: u64,
}

/// The payload of every presence message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Announcement {
    pub(crate) node: String,
    pub(crate) instance: String,
    pub(crate) heartbeat_ms: u64,
    pub(crate) uptime_ms: u64,
    pub(crate) exported: u64,
    pub(crate) imported: u64,
    pub(crate) dropped: u64,
}

/// What a presence message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Joined,
    Health,
    Left,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Joined => "joined",
            Kind::Health => "health",
            Kind::Left => "left",
        }
    }

    /// The subject this node publishes a message of this kind on.
    pub(crate) fn subject(self, prefix: &str, node: &str) -> String {
        match self {
            Kind::Health => format!("{prefix}.node.health.{node}"),
            kind => format!("{prefix}.node.{}", kind.name()),
        }
    }

    /// The kind of a message on `subject` (under `<prefix>.node.`).
    fn of(subject: &str, prefix: &str) -> Option<Self> {
        let rest = subject.strip_prefix(prefix)?.strip_prefix(".node.")?;
        match rest.split_once('.') {
            None if rest == "joined" => Some(Kind::Joined),
            None if rest == "left" => Some(Kind::Left),
            Some(("health", _)) => Some(Kind::Health),
            _ => None,
        }
    }
}

struct Peer {
    node: String,
    heartbeat: Duration,
    last_seen: Instant,
}

/// What this bridge knows of the other nodes. Owned by the bridge's inbound loop.
pub(crate) struct Peers {
    own_instance: String,
    prefix: String,
    known: HashMap<String, Peer>,
}

/// What the inbound loop must do after a presence message.
pub(crate) struct Heard {
    /// Local events to publish, in order.
    pub(crate) joined: Option<NodeJoined>,
    pub(crate) health: Option<NodeHealth>,
    pub(crate) left: Option<NodeLeft>,
    /// A newcomer announced itself: answer with a heartbeat now.
    pub(crate) answer: bool,
}

/// Why a presence message was refused (counted by the bridge like any bad input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not `joined`, `health` or `left`.
    UnknownKind,
    /// The payload is not an announcement.
    Payload,
}

/// How many nodes are remembered: beyond this, unknown nodes are not added (their events
/// still flow; only presence events about them are not published).
const MAX_PEERS: usize = 4096;

impl Peers {
    pub(crate) fn new(own_instance: String, prefix: String) -> Self {
        Self {
            own_instance,
            prefix,
            known: HashMap::new(),
        }
    }

    /// Reads one presence message (own messages are ignored: `None`).
    pub(crate) fn hear(
        &mut self,
        message: &Message,
        now: Instant,
    ) -> Result<Option<Heard>, Refused> {
        let kind = Kind::of(message.subject.as_str(), &self.prefix).ok_or(Refused::UnknownKind)?;
        let said: Announcement =
            serde_json::from_slice(&message.payload).map_err(|_| Refused::Payload)?;
        if said.instance == self.own_instance {
            return Ok(None);
        }
        let mut heard = Heard {
            joined: None,
            health: None,
            left: None,
            answer: false,
        };
        if kind == Kind::Left {
            if let Some(peer) = self.known.remove(&said.instance) {
                heard.left = Some(NodeLeft {
                    node: peer.node,
                    instance: said.instance,
                    reason: NodeLeftReason::Shutdown,
                });
            }
            return Ok(Some(heard));
        }
        let heartbeat = Duration::from_millis(said.heartbeat_ms.max(1));
        let room = self.known.len() < MAX_PEERS;
        match self.known.get_mut(&said.instance) {
            Some(peer) => {
                peer.last_seen = now;
                peer.heartbeat = heartbeat;
            }
            None if room => {
                self.known.insert(
                    said.instance.clone(),
                    Peer {
                        node: said.node.clone(),
                        heartbeat,
                        last_seen: now,
                    },
                );
                heard.joined = Some(NodeJoined {
                    node: said.node.clone(),
                    instance: said.instance.clone(),
                });
                heard.answer = kind == Kind::Joined;
            }
            None => {}
        }
        if kind == Kind::Health {
            heard.health = Some(NodeHealth {
                node: said.node,
                instance: said.instance,
                uptime: Duration::from_millis(said.uptime_ms),
                heartbeat,
                exported: said.exported,
                imported: said.imported,
                dropped: said.dropped,
            });
        }
        Ok(Some(heard))
    }

    /// The nodes silent for three of their heartbeat intervals, now gone.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<NodeLeft> {
        let silent: Vec<String> = self
            .known
            .iter()
            .filter(|(_, peer)| now.duration_since(peer.last_seen) > peer.heartbeat * 3)
            .map(|(instance, _)| instance.clone())
            .collect();
        self.forget(silent, NodeLeftReason::MissedHeartbeats)
    }

    /// Every known node, gone at once: this bridge's connection was lost.
    pub(crate) fn lose_all(&mut self) -> Vec<NodeLeft> {
        let all: Vec<String> = self.known.keys().cloned().collect();
        self.forget(all, NodeLeftReason::ConnectionLost)
    }

    fn forget(&mut self, instances: Vec<String>, reason: NodeLeftReason) -> Vec<NodeLeft> {
        let mut left: Vec<NodeLeft> = instances
            .into_iter()
            .filter_map(|instance| {
                let peer = self.known.remove(&instance)?;
                Some(NodeLeft {
                    node: peer.node,
                    instance,
                    reason,
                })
            })
            .collect();
        left.sort_by(|a, b| a.node.cmp(&b.node));
        left
    }
}

/// The announcement this bridge sends.
pub(crate) fn announcement(
    node: &str,
    instance: &str,
    heartbeat: Duration,
    started: SystemTime,
    stats: &crate::bridge::BridgeStats,
) -> Announcement {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Announcement {
        node: node.to_owned(),
        instance: instance.to_owned(),
        heartbeat_ms: millis(heartbeat),
        uptime_ms: millis(
            SystemTime::now()
                .duration_since(started)
                .unwrap_or_default(),
        ),
        exported: stats.exported,
        imported: stats.imported,
        dropped: stats.dropped_backpressure,
    }
}

/// Why a [`LinkedSubscription`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEnd {
    /// The node it is linked to is gone, and why.
    NodeLeft(NodeLeftReason),
    /// The subscription itself ended, as any subscription does (its scope finished, ...).
    Ended(EndReason),
}

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEnd::NodeLeft(reason) => write!(f, "the node is gone: {reason}"),
            LinkEnd::Ended(reason) => write!(f, "{reason}"),
        }
    }
}

/// The events of type `E` imported from one node, ending when that node is gone
/// ([`BridgeHandle::subscribe_linked`](crate::BridgeHandle::subscribe_linked)).
///
/// Every event of the node that reached the bus before its [`NodeLeft`] is yielded first;
/// then the stream ends and [`end_reason`](Self::end_reason) says why.
///
/// # Cancel safety
///
/// Reading it is cancel-safe, like a [`Subscription`](crate::Subscription)'s `next()`.
///
/// ```no_run
/// use futures::StreamExt;
/// use scopebus::{ctx, Bridge, LinkEnd, LinkedSubscription};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct PriceChanged { cents: u64 }
/// # impl scopebus::RemoteEvent for PriceChanged {
/// #     const KIND: &'static str = "market";
/// #     const NAME: &'static str = "price";
/// # }
///
/// # async fn demo() {
/// ctx::scope("dashboard").run(async {
///     // Before the bridge, so that not even the node's first event comes before it.
///     let mut prices = LinkedSubscription::<PriceChanged>::new("pricing").unwrap();
///     let _bridge = Bridge::new("nats://127.0.0.1:4222")
///         .import::<PriceChanged>()
///         .install()
///         .await
///         .unwrap();
///     while let Some(price) = prices.next().await {
///         println!("{}", price.cents);
///     }
///     if let Some(LinkEnd::NodeLeft(reason)) = prices.end_reason() {
///         println!("pricing is gone: {reason}");
///     }
/// }).await;
/// # }
/// ```
pub struct LinkedSubscription<E> {
    inner: AnySubscription,
    node: String,
    end: Option<LinkEnd>,
    _type: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for LinkedSubscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkedSubscription")
            .field("node", &self.node)
            .field("type", &std::any::type_name::<E>())
            .field("end", &self.end)
            .finish()
    }
}

impl<E: Send + Sync + 'static> LinkedSubscription<E> {
    /// Subscribes in the current scope to the events of type `E` imported from `node`: make
    /// it before installing the bridge to be sure to see the node's first events (what
    /// [`BridgeHandle::subscribe_linked`](crate::BridgeHandle::subscribe_linked) makes after).
    ///
    /// # Errors
    ///
    /// [`BridgeError::ScopeFinished`] outside of a scope or from a finished one.
    pub fn new(node: &str) -> Result<Self, BridgeError> {
        let inner = crate::ctx::subscribe_many()
            .with::<E>()
            .with::<NodeLeft>()
            .try_subscribe()
            .map_err(|_| BridgeError::ScopeFinished)?;
        Ok(Self {
            inner,
            node: node.to_owned(),
            end: None,
            _type: PhantomData,
        })
    }

    /// The node it follows.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Why the stream ended, once it has returned `None`.
    pub fn end_reason(&self) -> Option<LinkEnd> {
        self.end
    }

    fn take(&mut self, any: AnyEnvelope) -> Option<Envelope<E>> {
        if let Some(left) = any.downcast_ref::<NodeLeft>() {
            if left.node == self.node {
                self.end = Some(LinkEnd::NodeLeft(left.reason));
            }
            return None;
        }
        let envelope = any.downcast::<E>().ok()?;
        (envelope.origin().node() == Some(self.node.as_str())).then_some(envelope)
    }
}

impl<E: Send + Sync + 'static> Stream for LinkedSubscription<E> {
    type Item = Envelope<E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope<E>>> {
        let this = self.get_mut();
        loop {
            if this.end.is_some() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(any)) => {
                    if let Some(envelope) = this.take(any) {
                        return Poll::Ready(Some(envelope));
                    }
                }
                Poll::Ready(None) => {
                    let reason = this.inner.end_reason().unwrap_or(EndReason::BusClosed);
                    this.end = Some(LinkEnd::Ended(reason));
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<E: Send + Sync + 'static> FusedStream for LinkedSubscription<E> {
    fn is_terminated(&self) -> bool {
        self.end.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use async_nats::Message;

    use super::{Kind, NodeLeftReason, Peers, Refused};

    fn message(subject: &str, payload: Vec<u8>) -> Message {
        Message {
            subject: subject.to_owned().into(),
            reply: None,
            payload: payload.into(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        }
    }

    fn said(instance: &str, node: &str) -> Vec<u8> {
        format!(
            r#"{{"node":"{node}","instance":"{instance}","heartbeat_ms":100,"uptime_ms":5,"exported":1,"imported":2,"dropped":0}}"#
        )
        .into_bytes()
    }

    #[test]
    fn kinds_by_subject() {
        let of = |s: &str| Kind::of(s, "events");
        assert_eq!(of("events.node.joined"), Some(Kind::Joined));
        assert_eq!(of("events.node.left"), Some(Kind::Left));
        assert_eq!(of("events.node.health.a"), Some(Kind::Health));
        for other in [
            "events.node.health",
            "events.node.x",
            "other.node.joined",
            "events.node",
        ] {
            assert_eq!(of(other), None, "{other}");
        }
        assert_eq!(Kind::Health.subject("events", "a"), "events.node.health.a");
        assert_eq!(Kind::Joined.subject("events", "a"), "events.node.joined");
    }

    #[test]
    fn a_node_is_known_until_it_leaves_goes_silent_or_the_connection_drops() {
        let start = Instant::now();
        let mut peers = Peers::new("me".into(), "events".into());
        let joined = peers
            .hear(&message("events.node.joined", said("i1", "a")), start)
            .unwrap()
            .unwrap();
        assert_eq!(joined.joined.unwrap().node, "a");
        assert!(joined.answer, "a newcomer is answered");
        let again = peers
            .hear(&message("events.node.health.a", said("i1", "a")), start)
            .unwrap()
            .unwrap();
        assert!(again.joined.is_none() && again.health.is_some() && !again.answer);
        assert!(
            peers
                .hear(&message("events.node.joined", said("me", "me")), start)
                .unwrap()
                .is_none()
        );
        assert!(peers.expire(start + Duration::from_millis(250)).is_empty());
        let silent = peers.expire(start + Duration::from_millis(301));
        assert_eq!(silent[0].reason, NodeLeftReason::MissedHeartbeats);
        peers
            .hear(&message("events.node.health.a", said("i1", "a")), start)
            .unwrap();
        assert_eq!(peers.lose_all()[0].reason, NodeLeftReason::ConnectionLost);
        peers
            .hear(&message("events.node.health.a", said("i1", "a")), start)
            .unwrap();
        let left = peers
            .hear(&message("events.node.left", said("i1", "a")), start)
            .unwrap()
            .unwrap();
        assert_eq!(left.left.unwrap().reason, NodeLeftReason::Shutdown);
        assert_eq!(
            peers
                .hear(&message("events.node.left", b"{".to_vec()), start)
                .err(),
            Some(Refused::Payload)
        );
    }

    // Hostile input (issue 7): arbitrary subjects and payloads never panic.
    mod fuzz {
        use std::time::Instant;

        use proptest::prelude::*;

        use super::super::Peers;
        use super::message;

        proptest! {
            #[test]
            fn arbitrary_presence_messages_never_panic(
                suffix in prop::collection::vec(any::<char>(), 0..20),
                payload in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut peers = Peers::new("me".into(), "events".into());
                let subject = format!("events.node.{}", suffix.into_iter().collect::<String>());
                let _ = peers.hear(&message(&subject, payload), Instant::now());
            }
        }
    }
}
