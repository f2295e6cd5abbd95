//! Events that cross processes (feature `nats`): the [`RemoteEvent`] trait, wire names and
//! subjects, and the subject-pattern parser.
//!
//! Invariants:
//! - A bridged type's wire name is `<KIND>.<NAME>`, two tokens of `[a-z0-9_-]`, 1 to 64
//!   characters each, checked when the type is registered with a bridge; its subject is
//!   `<prefix>.<KIND>.<NAME>` (`events.tool.called`). Never `std::any::type_name`, whose output
//!   is not stable between compiler versions.
//! - The kind `node` is reserved for node presence (`events.node.joined` / `left` / `health`).
//! - A subject pattern is dot-separated tokens; `*` matches one token, `>` the rest and only
//!   last; tokens are non-empty printable ASCII without spaces. Anything else is refused with a
//!   reason before it reaches the server (the client accepts some of it and the server then
//!   matches it literally).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BridgeError;

/// An event type that can cross processes through the NATS bridge.
///
/// Its wire name, `KIND.NAME`, is stable and chosen by you (never derived from the Rust type
/// name), and gives its subject: `events.<KIND>.<NAME>` with the default prefix. Both are
/// lower-case tokens of letters, digits, `_` and `-`. The payload is the event serialized with
/// serde (JSON on the wire).
///
/// ```
/// use scopebus::RemoteEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct ToolCalled {
///     tool: String,
///     millis: u64,
/// }
///
/// impl RemoteEvent for ToolCalled {
///     const KIND: &'static str = "tool";
///     const NAME: &'static str = "called";
/// }
/// ```
pub trait RemoteEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The first token of the wire name: a family of events (`tool`, `order`, `user`).
    const KIND: &'static str;
    /// The second token: the event within its kind (`called`, `placed`).
    const NAME: &'static str;
    /// The payload's schema version, carried in the `Ev-Type` header (`tool.called/1`).
    const VERSION: u32 = 1;
}

/// The longest token accepted in a wire name or prefix.
const MAX_TOKEN: usize = 64;

/// Checks one token of a wire name or prefix.
pub(crate) fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("is empty");
    }
    if token.len() > MAX_TOKEN {
        return Err("is longer than 64 characters");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("may only hold a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

/// Checks a subject prefix: one or more tokens separated by dots.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BridgeError> {
    for token in prefix.split('.') {
        check_token(token).map_err(|reason| BridgeError::InvalidName {
            name: prefix.to_owned(),
            reason: format!("the prefix's token `{token}` {reason}"),
        })?;
    }
    Ok(())
}

/// A bridged type's wire identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireName {
    /// `kind.name`
    pub(crate) name: String,
    pub(crate) version: u32,
}

impl WireName {
    /// `E`'s wire name, checked.
    pub(crate) fn of<E: RemoteEvent>() -> Result<Self, BridgeError> {
        for (part, token) in [("KIND", E::KIND), ("NAME", E::NAME)] {
            check_token(token).map_err(|reason| BridgeError::InvalidName {
                name: format!("{}.{}", E::KIND, E::NAME),
                reason: format!("{part} of `{}` {reason}", std::any::type_name::<E>()),
            })?;
        }
        if E::KIND == "node" {
            return Err(BridgeError::InvalidName {
                name: format!("{}.{}", E::KIND, E::NAME),
                reason: "the kind `node` is reserved for node presence".to_owned(),
            });
        }
        Ok(Self {
            name: format!("{}.{}", E::KIND, E::NAME),
            version: E::VERSION,
        })
    }

    pub(crate) fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}", self.name)
    }
}

/// Checks a subject pattern (for [`watch`](crate::BridgeHandle::watch) and history filters).
pub(crate) fn check_pattern(pattern: &str) -> Result<(), BridgeError> {
    let refuse = |reason: &str| {
        Err(BridgeError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if pattern.is_empty() {
        return refuse("is empty");
    }
    if pattern.len() > 1024 {
        return refuse("is longer than 1024 bytes");
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return refuse("has an empty token (two dots, or a dot at an end)"),
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => return refuse("has `>` before its last token"),
            token if token.contains(['*', '>']) => {
                return refuse("has `*` or `>` inside a token (each must be a whole token)");
            }
            token if !token.bytes().all(|b| b.is_ascii_graphic()) => {
                return refuse("has a space, a control character or a non-ASCII character");
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_pattern, check_token};

    #[test]
    fn tokens() {
        assert!(check_token("tool").is_ok());
        assert!(check_token("a_b-9").is_ok());
        for bad in ["", "Tool", "a.b", "a*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(check_token(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns() {
        for good in [
            "events.>",
            "events.tool.*",
            "*",
            ">",
            "events.*.called",
            "a.b.c",
        ] {
            assert!(check_pattern(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "",
            "events.",
            ".events",
            "events..x",
            "events.>.x",
            "events.a*",
            "ev ents",
            "a\r\nb",
            "a.\u{7f}",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    // Hostile input (issue 7): arbitrary text into the subject-pattern parser.
    mod fuzz {
        use proptest::prelude::*;

        use super::super::{check_pattern, check_token};

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::collection::vec(prop::sample::select(b"ab.*> \t\r".to_vec()), 0..24)
                    .prop_map(|b| String::from_utf8(b).unwrap()),
                prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
            ]
        }

        proptest! {
            #[test]
            fn the_pattern_parser_never_panics_and_accepts_only_wellformed_patterns(p in text()) {
                if check_pattern(&p).is_ok() {
                    let tokens: Vec<&str> = p.split('.').collect();
                    for (i, token) in tokens.iter().enumerate() {
                        prop_assert!(!token.is_empty());
                        prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
                        prop_assert!(*token == "*" || *token == ">" || !token.contains(['*', '>']));
                        prop_assert!(*token != ">" || i + 1 == tokens.len());
                    }
                }
                let _ = check_token(&p);
            }
        }
    }
}
