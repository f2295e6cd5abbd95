//! JetStream history for the NATS bridge (feature `nats`): [`History`] (the stream's
//! settings), the stream's creation or check at start, and the queries behind
//! [`BridgeHandle::history`](crate::BridgeHandle::history) and its typed forms ([`Stored`]).
//!
//! The stream keeps every message on `<prefix>.*.*`: every bridged event type, and nodes'
//! `joined` / `left` (heartbeats have a fourth token and are not kept). Its limits (max age,
//! max messages) apply stream-wide: a chatty type evicts the history of the others.
//!
//! "The newest N matching events" has no JetStream primitive. The query measures how many
//! messages match (a consumer's pending count), estimates where the newest N start from the
//! stream's sequence range, reads from there, and widens the span (doubling it) when that was
//! not far enough back — about 1.5 N messages moved, two consumers made, for an even mix of
//! types (NATS-NOTES §3, "gallop"). Every consumer is ephemeral, in memory, without acks, and
//! deleted after use; every query has a timeout.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self as js, Context};
use futures::StreamExt;

use crate::error::BridgeError;
use crate::wire::RawEvent;

/// The JetStream stream that keeps the bridged events, for
/// [`Bridge::history`](crate::Bridge::history).
///
/// ```
/// use std::time::Duration;
/// use scopebus::{Bridge, History};
///
/// let bridge = Bridge::new("nats://127.0.0.1:4222").history(
///     History::new()
///         .max_age(Duration::from_secs(3600))
///         .max_messages(50_000)
///         .timeout(Duration::from_secs(2)),
/// );
/// # drop(bridge);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub(crate) stream: String,
    pub(crate) max_age: Duration,
    pub(crate) max_messages: u64,
    pub(crate) timeout: Duration,
}

impl Default for History {
    /// The stream `EVENTS`, keeping 24 hours and at most 10 000 events; queries time out
    /// after 5 s.
    fn default() -> Self {
        Self {
            stream: "EVENTS".to_owned(),
            max_age: Duration::from_secs(24 * 60 * 60),
            max_messages: 10_000,
            timeout: Duration::from_secs(5),
        }
    }
}

impl History {
    /// The defaults (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's name (letters, digits, `_` and `-`).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// How long events are kept.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// How many events are kept, all types together; the oldest go first.
    pub fn max_messages(mut self, count: u64) -> Self {
        self.max_messages = count;
        self
    }

    /// The longest a history query may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn check(&self) -> Result<(), BridgeError> {
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(BridgeError::InvalidName {
                name: self.stream.clone(),
                reason: "a stream name may only hold letters, digits, '_' and '-'".to_owned(),
            });
        }
        if self.max_messages == 0 || self.max_age.is_zero() {
            return Err(BridgeError::InvalidConfig(
                "a history that keeps nothing (max_messages or max_age of 0)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// An event read back from history, decoded as `E`
/// ([`BridgeHandle::history_of`](crate::BridgeHandle::history_of)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stored<E> {
    /// The event.
    pub event: E,
    /// The node that sent it.
    pub node: String,
    /// The scope it was sent from, on that node.
    pub scope: String,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// Its event id (`Ev-Id`).
    pub id: String,
    /// Its sequence number in the stream.
    pub stream_seq: u64,
}

/// Makes the stream, or checks the one that exists: it must keep `<prefix>.*.*`; limits that
/// differ from `history` are logged and left as they are (operators may own the stream).
pub(crate) async fn ensure_stream(
    js: &Context,
    history: &History,
    prefix: &str,
) -> Result<js::stream::Stream, BridgeError> {
    let subject = format!("{prefix}.*.*");
    let config = stream::Config {
        name: history.stream.clone(),
        subjects: vec![subject.clone()],
        max_age: history.max_age,
        max_messages: i64::try_from(history.max_messages).unwrap_or(i64::MAX),
        storage: StorageType::File,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let work = async {
        let mut stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BridgeError::Stream(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| BridgeError::Stream(e.to_string()))?;
        let kept = &info.config.subjects;
        let covers = kept
            .iter()
            .any(|s| s == &subject || s == &format!("{prefix}.>") || s == ">");
        if !covers {
            return Err(BridgeError::Stream(format!(
                "stream `{}` exists but keeps {kept:?}, not `{subject}`",
                history.stream
            )));
        }
        let (age, max) = (info.config.max_age, info.config.max_messages);
        if age != history.max_age || max != i64::try_from(history.max_messages).unwrap_or(i64::MAX)
        {
            tracing::warn!(
                stream = %history.stream,
                "the history stream exists with other limits (max age {age:?}, max messages \
                 {max}); they are kept"
            );
        }
        Ok(stream)
    };
    tokio::time::timeout(history.timeout, work)
        .await
        .map_err(|_| BridgeError::Timeout("history stream"))?
}

/// Where a query starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// The newest `limit` of everything kept.
    Everything,
    /// The newest `limit` of what was stored since this time.
    Since(SystemTime),
}

/// The newest `limit` messages matching `filter` that `accept` takes, oldest first. Messages
/// `accept` refuses are skipped and do not count towards `limit`.
pub(crate) async fn newest<T>(
    stream: &mut js::stream::Stream,
    filter: &str,
    from: Start,
    limit: usize,
    mut accept: impl FnMut(RawEvent) -> Option<T>,
) -> Result<Vec<T>, BridgeError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let info = stream
        .info()
        .await
        .map_err(|e| BridgeError::Stream(e.to_string()))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    if let Start::Since(time) = from {
        let start = DeliverPolicy::ByStartTime {
            start_time: time.into(),
        };
        return scan(stream, filter, start, limit, &mut accept).await;
    }
    let matching = pending(stream, filter, first).await?;
    if matching == 0 {
        return Ok(Vec::new());
    }
    // Where the newest `limit` should start if matches are spread evenly, with half again.
    let span = last - first + 1;
    let guess = (span as f64 * 1.5 * limit as f64 / matching as f64).ceil() as u64;
    let mut start = if matching as usize <= limit {
        first
    } else {
        last.saturating_sub(guess).max(first)
    };
    loop {
        let policy = DeliverPolicy::ByStartSequence {
            start_sequence: start,
        };
        let found = scan(stream, filter, policy, limit, &mut accept).await?;
        if found.len() >= limit || start <= first {
            return Ok(found);
        }
        let reach = (last - start + 1) * 2;
        start = last.saturating_sub(reach).max(first);
    }
}

fn query_consumer(filter: &str, deliver_policy: DeliverPolicy) -> pull::Config {
    pull::Config {
        filter_subject: filter.to_owned(),
        deliver_policy,
        ack_policy: AckPolicy::None,
        memory_storage: true,
        inactive_threshold: Duration::from_secs(5),
        ..Default::default()
    }
}

/// How many messages match `filter` from `start` on (a consumer's pending count; no message
/// moves).
async fn pending(
    stream: &js::stream::Stream,
    filter: &str,
    start: u64,
) -> Result<u64, BridgeError> {
    let policy = DeliverPolicy::ByStartSequence {
        start_sequence: start,
    };
    let consumer = stream
        .create_consumer(query_consumer(filter, policy))
        .await
        .map_err(|e| BridgeError::Stream(e.to_string()))?;
    let pending = consumer.cached_info().num_pending;
    let name = consumer.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    Ok(pending)
}

/// Reads every message matching `filter` from `policy` on, keeping the last `limit` that
/// `accept` takes.
async fn scan<T>(
    stream: &js::stream::Stream,
    filter: &str,
    policy: DeliverPolicy,
    limit: usize,
    accept: &mut impl FnMut(RawEvent) -> Option<T>,
) -> Result<Vec<T>, BridgeError> {
    let consumer = stream
        .create_consumer(query_consumer(filter, policy))
        .await
        .map_err(|e| BridgeError::Stream(e.to_string()))?;
    let name = consumer.cached_info().name.clone();
    let total = consumer.cached_info().num_pending;
    let mut kept = VecDeque::with_capacity(limit.min(4096));
    let mut read = 0;
    let result = async {
        while read < total {
            let batch = usize::try_from(total - read)
                .unwrap_or(usize::MAX)
                .min(1000);
            let mut messages = consumer
                .fetch()
                .max_messages(batch)
                .messages()
                .await
                .map_err(|e| BridgeError::Stream(e.to_string()))?;
            let before = read;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| BridgeError::Stream(e.to_string()))?;
                read += 1;
                let seq = message.info().map(|i| i.stream_sequence).ok();
                let mut raw = RawEvent::new(
                    message.subject.as_str(),
                    message.headers.as_ref(),
                    message.payload.clone(),
                );
                raw.stream_seq = seq;
                if let Some(item) = accept(raw) {
                    if kept.len() == limit {
                        kept.pop_front();
                    }
                    kept.push_back(item);
                }
            }
            if read == before {
                break; // evicted meanwhile: nothing more to read
            }
        }
        Ok::<_, BridgeError>(())
    }
    .await;
    let _ = stream.delete_consumer(&name).await;
    result?;
    Ok(kept.into())
}
