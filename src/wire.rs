//! The NATS bridge's wire envelope (feature `nats`): headers in, headers out, and
//! [`RawEvent`], what untyped consumers receive.
//!
//! A message's payload is the serialized event and nothing else; everything about it travels
//! in headers, so that a receiver can drop or route a message before decoding it:
//!
//! | header | value |
//! |---|---|
//! | `Ev-Origin` | the sending bridge's instance id (32 hex digits, new at every start) |
//! | `Ev-Node` | the sending bridge's node name |
//! | `Ev-Scope` | the name of the scope the event was sent from |
//! | `Ev-Type` | `kind.name/version` |
//! | `Ev-Codec` | `json` |
//! | `Ev-Id` | the event's id, `<origin>-<bus sequence>`, unique across nodes and restarts |
//! | `Ev-Seq` | 1, 2, 3, ... per sending bridge and type: a receiver counts the gaps as lost |
//! | `Ev-Time` | the send time, nanoseconds since the Unix epoch |
//! | `Nats-Msg-Id` | the event id again, for JetStream's duplicate window (persistent types) |
//!
//! Invariants: decoding never panics and never allocates more than the headers it is given;
//! every way a message can be wrong has its own [`WireError`], which the bridge counts.
//! Values written are checked (`HeaderValue::from_str`), never `insert(&str)`, which panics
//! on CR or LF.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;

pub(crate) const ORIGIN: &str = "Ev-Origin";
pub(crate) const NODE: &str = "Ev-Node";
pub(crate) const SCOPE: &str = "Ev-Scope";
pub(crate) const TYPE: &str = "Ev-Type";
pub(crate) const CODEC: &str = "Ev-Codec";
pub(crate) const ID: &str = "Ev-Id";
pub(crate) const SEQ: &str = "Ev-Seq";
pub(crate) const TIME: &str = "Ev-Time";
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// The only codec so far.
pub(crate) const JSON: &str = "json";

/// What the headers of one bridged event say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) origin: String,
    pub(crate) node: String,
    pub(crate) scope: String,
    /// `kind.name`
    pub(crate) type_name: String,
    pub(crate) version: u32,
    pub(crate) id: String,
    /// The sending bridge's count of this type's events, from 1.
    pub(crate) seq: u64,
    pub(crate) sent_at: SystemTime,
}

/// Why a message's headers were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// No headers at all, or one of ours absent.
    MissingHeader(&'static str),
    /// One of ours present but unreadable.
    MalformedHeader(&'static str),
    /// A codec this bridge does not speak.
    UnknownCodec,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::MissingHeader(name) => write!(f, "header `{name}` is missing"),
            WireError::MalformedHeader(name) => write!(f, "header `{name}` is malformed"),
            WireError::UnknownCodec => write!(f, "unknown codec (this bridge speaks `json`)"),
        }
    }
}

/// A header value from text we do not control (a scope name): CR, LF and other control
/// characters become spaces. `true` in the second place if anything was replaced.
pub(crate) fn header_value(text: &str) -> (HeaderValue, bool) {
    if let Ok(value) = text.parse::<HeaderValue>()
        && !text.chars().any(char::is_control)
    {
        return (value, false);
    }
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let value = clean
        .parse::<HeaderValue>()
        .unwrap_or_else(|_| HeaderValue::from(""));
    (value, true)
}

/// Writes `meta` as headers; `persistent` adds `Nats-Msg-Id`. `true` in the second place if a
/// value had to be cleaned (see [`header_value`]).
pub(crate) fn encode(meta: &Meta, persistent: bool) -> (HeaderMap, bool) {
    let mut headers = HeaderMap::new();
    let mut cleaned = false;
    let mut put = |name: &'static str, text: &str| {
        let (value, dirty) = header_value(text);
        cleaned |= dirty;
        headers.insert(name, value);
    };
    let nanos = meta
        .sent_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    put(ORIGIN, &meta.origin);
    put(NODE, &meta.node);
    put(SCOPE, &meta.scope);
    put(TYPE, &format!("{}/{}", meta.type_name, meta.version));
    put(CODEC, JSON);
    put(ID, &meta.id);
    put(SEQ, &meta.seq.to_string());
    put(TIME, &nanos.to_string());
    if persistent {
        put(MSG_ID, &meta.id);
    }
    (headers, cleaned)
}

fn get<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WireError> {
    headers
        .get(name)
        .map(HeaderValue::as_str)
        .ok_or(WireError::MissingHeader(name))
}

/// Splits `kind.name/version`.
pub(crate) fn parse_type(text: &str) -> Option<(&str, u32)> {
    let (name, version) = text.rsplit_once('/')?;
    let (kind, event) = name.split_once('.')?;
    let ok = |t: &str| crate::remote::check_token(t).is_ok();
    (ok(kind) && ok(event)).then_some(())?;
    Some((name, version.parse().ok()?))
}

/// Parses nanoseconds since the Unix epoch.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    let nanos: u64 = text.parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

/// Reads the headers of a bridged event.
pub(crate) fn decode(headers: Option<&HeaderMap>) -> Result<Meta, WireError> {
    let headers = headers.ok_or(WireError::MissingHeader(ORIGIN))?;
    let origin = get(headers, ORIGIN)?;
    let (type_name, version) =
        parse_type(get(headers, TYPE)?).ok_or(WireError::MalformedHeader(TYPE))?;
    if get(headers, CODEC)? != JSON {
        return Err(WireError::UnknownCodec);
    }
    let id = get(headers, ID)?;
    if origin.is_empty() || id.is_empty() {
        return Err(WireError::MalformedHeader(if origin.is_empty() {
            ORIGIN
        } else {
            ID
        }));
    }
    let seq = get(headers, SEQ)?
        .parse()
        .map_err(|_| WireError::MalformedHeader(SEQ))?;
    let sent_at = parse_time(get(headers, TIME)?).ok_or(WireError::MalformedHeader(TIME))?;
    Ok(Meta {
        origin: origin.to_owned(),
        node: get(headers, NODE)?.to_owned(),
        scope: headers
            .get(SCOPE)
            .map_or("", HeaderValue::as_str)
            .to_owned(),
        type_name: type_name.to_owned(),
        version,
        id: id.to_owned(),
        seq,
        sent_at,
    })
}

/// One message as an untyped consumer sees it ([`BridgeHandle::watch`](crate::BridgeHandle::watch),
/// history): the subject, what its headers say, and the payload as bytes.
///
/// Every field read from a header is an `Option`: a raw consumer receives every message on its
/// subjects, including those not sent by a scopebus bridge.
///
/// ```no_run
/// use futures::StreamExt;
/// # async fn demo(bridge: scopebus::BridgeHandle) -> Result<(), scopebus::BridgeError> {
/// let mut everything = bridge.watch("events.>").await?;
/// while let Some(event) = everything.next().await {
///     match event.json() {
///         Ok(json) => println!("{} from {:?}: {json}", event.subject, event.node),
///         Err(_) => println!("{event}"), // not JSON: the line shows its size
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RawEvent {
    /// The subject it was published on (`events.tool.called`).
    pub subject: String,
    /// `kind.name` from `Ev-Type`.
    pub type_name: Option<String>,
    /// The schema version from `Ev-Type`.
    pub version: Option<u32>,
    /// The sending node's name (`Ev-Node`).
    pub node: Option<String>,
    /// The sending bridge's instance id (`Ev-Origin`).
    pub origin: Option<String>,
    /// The name of the scope it was sent from (`Ev-Scope`).
    pub scope: Option<String>,
    /// The event id (`Ev-Id`).
    pub id: Option<String>,
    /// When it was sent (`Ev-Time`).
    pub sent_at: Option<SystemTime>,
    /// The JetStream sequence number, for events read from history.
    pub stream_seq: Option<u64>,
    /// The serialized event.
    pub payload: Bytes,
}

impl RawEvent {
    pub(crate) fn new(subject: &str, headers: Option<&HeaderMap>, payload: Bytes) -> Self {
        let header = |name| headers.and_then(|h| h.get(name)).map(HeaderValue::as_str);
        let kind = header(TYPE).and_then(parse_type);
        Self {
            subject: subject.to_owned(),
            type_name: kind.map(|(name, _)| name.to_owned()),
            version: kind.map(|(_, version)| version),
            node: header(NODE).map(str::to_owned),
            origin: header(ORIGIN).map(str::to_owned),
            scope: header(SCOPE).map(str::to_owned),
            id: header(ID).map(str::to_owned),
            sent_at: header(TIME).and_then(parse_time),
            stream_seq: None,
            payload,
        }
    }

    /// The payload parsed as JSON.
    ///
    /// # Errors
    ///
    /// When the payload is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The payload decoded as `E`.
    ///
    /// # Errors
    ///
    /// When the payload is not a JSON `E`.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// `2026-11-24T00:12:59.847112Z` (UTC, microseconds).
fn write_time(f: &mut fmt::Formatter<'_>, since_epoch: Duration) -> fmt::Result {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm, for days since 1970-01-01).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write!(
        f,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_micros()
    )
}

/// One readable line: time (UTC), subject, node and scope, and the payload (as text when it
/// is UTF-8).
impl fmt::Display for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .sent_at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            Some(since) => write_time(f, since)?,
            None => f.write_str("-")?,
        }
        write!(f, " {}", self.subject)?;
        if let Some(node) = &self.node {
            write!(f, " from {node}")?;
        }
        if let Some(scope) = &self.scope {
            write!(f, "/{scope}")?;
        }
        match std::str::from_utf8(&self.payload) {
            Ok(text) => write!(f, " {text}"),
            Err(_) => write!(f, " <{} bytes>", self.payload.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use async_nats::HeaderMap;

    use super::{Meta, WireError, decode, encode, header_value, parse_type};

    fn meta() -> Meta {
        Meta {
            origin: "0123456789abcdef0123456789abcdef".into(),
            node: "node-a".into(),
            scope: "orders".into(),
            type_name: "tool.called".into(),
            version: 2,
            id: "0123456789abcdef0123456789abcdef-7".into(),
            seq: 3,
            sent_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn headers_round_trip() {
        let (headers, cleaned) = encode(&meta(), true);
        assert!(!cleaned);
        assert_eq!(decode(Some(&headers)), Ok(meta()));
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), meta().id);
    }

    #[test]
    fn control_characters_in_values_are_replaced_and_reported() {
        let (value, cleaned) = header_value("a\r\nb");
        assert!(cleaned);
        assert_eq!(value.as_str(), "a  b");
        let mut m = meta();
        m.scope = "evil\r\nInjected: yes".into();
        let (headers, cleaned) = encode(&m, false);
        assert!(cleaned);
        assert!(headers.get("Injected").is_none());
        assert_eq!(decode(Some(&headers)).unwrap().scope, "evil  Injected: yes");
    }

    #[test]
    fn every_bad_header_is_refused_with_its_reason() {
        assert_eq!(decode(None), Err(WireError::MissingHeader("Ev-Origin")));
        let (good, _) = encode(&meta(), false);
        let with = |name: &str, value: &str| {
            let mut h = good.clone();
            h.insert(name, value);
            decode(Some(&h))
        };
        let without = |name: &str| {
            let mut h = HeaderMap::new();
            for (n, values) in good.iter() {
                if AsRef::<str>::as_ref(n) != name {
                    h.insert(n.clone(), values[0].clone());
                }
            }
            decode(Some(&h))
        };
        assert_eq!(
            with("Ev-Type", "nonsense"),
            Err(WireError::MalformedHeader("Ev-Type"))
        );
        assert_eq!(
            with("Ev-Type", "tool.called/x"),
            Err(WireError::MalformedHeader("Ev-Type"))
        );
        assert_eq!(with("Ev-Codec", "xml"), Err(WireError::UnknownCodec));
        assert_eq!(
            with("Ev-Time", "yesterday"),
            Err(WireError::MalformedHeader("Ev-Time"))
        );
        assert_eq!(
            with("Ev-Origin", ""),
            Err(WireError::MalformedHeader("Ev-Origin"))
        );
        for name in [
            "Ev-Origin",
            "Ev-Type",
            "Ev-Codec",
            "Ev-Id",
            "Ev-Time",
            "Ev-Node",
        ] {
            assert_eq!(without(name), Err(WireError::MissingHeader(name)), "{name}");
        }
    }

    #[test]
    fn a_raw_event_reads_as_one_line_with_its_utc_time() {
        let (headers, _) = encode(&meta(), false);
        let raw = super::RawEvent::new("events.tool.called", Some(&headers), "{}".into());
        assert_eq!(
            raw.to_string(),
            "2023-11-14T22:13:20.123456Z events.tool.called from node-a/orders {}"
        );
        let bare = super::RawEvent::new("x.y", None, vec![0xff].into());
        assert_eq!(bare.to_string(), "- x.y <1 bytes>");
        let leap = super::RawEvent {
            sent_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            ..bare
        };
        assert!(leap.to_string().starts_with("2000-02-29T00:00:00.000000Z"));
    }

    #[test]
    fn type_names() {
        assert_eq!(parse_type("tool.called/1"), Some(("tool.called", 1)));
        for bad in [
            "tool.called",
            "tool/1",
            "Tool.called/1",
            "tool.called/-1",
            "/1",
            "",
        ] {
            assert_eq!(parse_type(bad), None, "{bad:?}");
        }
    }

    // Hostile input (issue 7): arbitrary headers and payloads into the decoders. The case
    // count is proptest's (256; `PROPTEST_CASES=1000000` for a long run).
    mod fuzz {
        use std::time::{Duration, SystemTime};

        use async_nats::{HeaderMap, HeaderName, HeaderValue};
        use proptest::prelude::*;

        use super::super::{Meta, RawEvent, decode, encode, parse_time, parse_type};

        /// Any text: arbitrary characters, control characters and non-ASCII included.
        fn text(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
        }

        /// One of the bridge's header names most of the time, anything otherwise.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "Ev-Origin",
                    "Ev-Node",
                    "Ev-Scope",
                    "Ev-Type",
                    "Ev-Codec",
                    "Ev-Id",
                    "Ev-Seq",
                    "Ev-Time",
                    "Nats-Msg-Id",
                ])
                .prop_map(str::to_owned),
                text(16),
            ]
        }

        /// A plausible value most of the time (digits, a type, `json`), anything otherwise.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                Just("tool.called/1".to_owned()),
                Just("json".to_owned()),
                text(40),
            ]
        }

        fn token() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(b"abcxyz019_-".to_vec()), 1..10)
                .prop_map(|b| String::from_utf8(b).unwrap())
        }

        proptest! {
            #[test]
            fn arbitrary_headers_and_payloads_never_panic(
                entries in prop::collection::vec((name(), value()), 0..12),
                payload in prop::collection::vec(any::<u8>(), 0..512),
            ) {
                let mut headers = HeaderMap::new();
                for (name, value) in entries {
                    // What the client itself refuses never reaches the bridge.
                    if let (Ok(name), Ok(value)) =
                        (name.parse::<HeaderName>(), value.parse::<HeaderValue>())
                    {
                        headers.insert(name, value);
                    }
                }
                let decoded = decode(Some(&headers));
                let raw = RawEvent::new("events.tool.called", Some(&headers), payload.into());
                let _ = (raw.to_string(), raw.json());
                if let Ok(meta) = decoded {
                    // Whatever is accepted is consistent with what a raw consumer reads.
                    prop_assert_eq!(raw.type_name.as_deref(), Some(meta.type_name.as_str()));
                    prop_assert_eq!(raw.sent_at, Some(meta.sent_at));
                }
            }

            #[test]
            fn type_and_time_parsers_never_panic(text in text(64)) {
                if let Some((name, _)) = parse_type(&text) {
                    prop_assert!(name.contains('.') && !name.contains('/'));
                }
                let _ = parse_time(&text);
            }

            #[test]
            fn whatever_a_bridge_writes_it_reads_back(
                origin in token(), node in token(), scope in text(40),
                kind in token(), event in token(), version in any::<u32>(),
                seq in any::<u64>(), nanos in 0u64..u64::MAX, persistent in any::<bool>(),
            ) {
                let meta = Meta {
                    id: format!("{origin}-{seq}"),
                    origin,
                    node,
                    scope,
                    type_name: format!("{kind}.{event}"),
                    version,
                    seq,
                    sent_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
                };
                let (headers, cleaned) = encode(&meta, persistent);
                let back = decode(Some(&headers)).expect("a bridge reads what it writes");
                prop_assert_eq!(cleaned, meta.scope.chars().any(char::is_control));
                if !cleaned {
                    prop_assert_eq!(back, meta);
                } else {
                    prop_assert!(!back.scope.chars().any(char::is_control));
                }
            }
        }
    }
}
