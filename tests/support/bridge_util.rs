//! What the bridge tests share: event types, a fast-reconnecting bridge, and waits with a
//! deadline (a test that would hang fails instead, saying what did not come).

#![allow(dead_code)] // each test file uses a part of it

use std::time::Duration;

use futures::StreamExt;
use scopebus::{Bridge, BridgeHandle, BridgeStats, ConnectOptions, RemoteEvent};
use serde::{Deserialize, Serialize};

use crate::nats::NatsServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCalled {
    pub tool: String,
    pub n: u64,
}

impl RemoteEvent for ToolCalled {
    const KIND: &'static str = "tool";
    const NAME: &'static str = "called";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDone {
    pub tool: String,
}

impl RemoteEvent for ToolDone {
    const KIND: &'static str = "tool";
    const NAME: &'static str = "done";
    const VERSION: u32 = 3;
}

pub const WAIT: Duration = Duration::from_secs(15);

/// Reconnects within half a second (the client's default backoff reaches 4 s).
pub fn fast() -> ConnectOptions {
    ConnectOptions::new()
        .reconnect_delay_callback(|attempt| Duration::from_millis((50 * attempt as u64).min(500)))
}

pub fn bridge(server: &NatsServer, node: &str) -> Bridge {
    Bridge::new(server.url()).node(node).options(fast())
}

/// The next item, or a panic naming what did not come.
pub async fn next<S: futures::Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}

/// Waits until `stats` satisfies `done` (a counter the bridge updates asynchronously).
pub async fn until(handle: &BridgeHandle, what: &str, done: impl Fn(&BridgeStats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {WAIT:?}; stats: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
