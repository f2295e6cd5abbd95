//! Two nodes exchanging typed events through NATS, then reading history.
//!
//! `pricing` publishes prices (persistently) and listens for alerts; `dashboard` follows the
//! prices of the `pricing` node, raises an alert on a high one, and sees its stream end, with
//! the reason, when `pricing` shuts down.
//!
//! Needs a `nats-server` with JetStream at `$NATS_URL` (default `nats://127.0.0.1:4222`), for
//! example `nats-server -js` (`./scripts/test` starts one for the examples).
//!
//! - `cargo run --features nats --example nats_pair` runs both nodes in one process, each with
//!   its own scope and connection;
//! - `cargo run --features nats --example nats_pair -- dashboard` then
//!   `cargo run --features nats --example nats_pair -- pricing` (in another terminal) runs
//!   them as two processes.

use futures::StreamExt;
use scopebus::{
    Bridge, Delivery, History, LinkEnd, LinkedSubscription, NodeJoined, RemoteEvent, ctx,
};
use serde::{Deserialize, Serialize};

// ANCHOR: types
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriceChanged {
    symbol: String,
    cents: u64,
}

impl RemoteEvent for PriceChanged {
    const KIND: &'static str = "market";
    const NAME: &'static str = "price";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriceAlert {
    symbol: String,
    cents: u64,
}

impl RemoteEvent for PriceAlert {
    const KIND: &'static str = "market";
    const NAME: &'static str = "alert";
}
// ANCHOR_END: types

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

// ANCHOR: pricing
async fn pricing() {
    ctx::scope("pricing")
        .run(async {
            let mut nodes = ctx::subscribe::<NodeJoined>();
            let mut alerts = ctx::subscribe::<PriceAlert>();
            let bridge = Bridge::new(url())
                .node("pricing")
                .history(History::new())
                .export_with::<PriceChanged>(Delivery::Persistent)
                .import::<PriceAlert>()
                .install()
                .await
                .expect("a nats-server with JetStream at $NATS_URL");
            // Wait until the dashboard is there (it answers our `joined` at once if it is).
            while nodes.next().await.expect("until the scope ends").node != "dashboard" {}
            for cents in 100..=105 {
                ctx::send(PriceChanged {
                    symbol: "ACME".into(),
                    cents,
                });
            }
            let alert = alerts.next().await.unwrap();
            println!(
                "pricing: alert from {} for {} at {}",
                alert.origin().node().unwrap_or("?"),
                alert.symbol,
                alert.cents
            );
            let recent = bridge.history_of::<PriceChanged>(3).await.unwrap();
            for stored in recent {
                println!(
                    "pricing: history #{} {} {} (from {})",
                    stored.stream_seq, stored.event.symbol, stored.event.cents, stored.node
                );
            }
            // Leaving the scope: the bridge drains its queue, says `left`, and closes.
        })
        .await;
}
// ANCHOR_END: pricing

// ANCHOR: dashboard
async fn dashboard() {
    ctx::scope("dashboard")
        .run(async {
            // Only the `pricing` node's prices, and the reason when it goes away. Made before
            // the bridge, so that not even its first event can come before it.
            let mut prices = LinkedSubscription::<PriceChanged>::new("pricing").unwrap();
            let _bridge = Bridge::new(url())
                .node("dashboard")
                .import_with::<PriceChanged>(Delivery::Persistent)
                .export::<PriceAlert>()
                .install()
                .await
                .expect("a nats-server with JetStream at $NATS_URL");
            while let Some(price) = prices.next().await {
                println!("dashboard: {} at {}", price.symbol, price.cents);
                if price.cents > 104 {
                    ctx::send(PriceAlert {
                        symbol: price.symbol.clone(),
                        cents: price.cents,
                    });
                }
            }
            match prices.end_reason() {
                Some(LinkEnd::NodeLeft(reason)) => println!("dashboard: pricing is gone: {reason}"),
                other => println!("dashboard: stream ended: {other:?}"),
            }
        })
        .await;
}
// ANCHOR_END: dashboard

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("pricing") => pricing().await,
        Some("dashboard") => dashboard().await,
        None | Some("both") => {
            let watcher = tokio::spawn(dashboard());
            pricing().await;
            watcher.await.unwrap();
        }
        Some(other) => {
            eprintln!("unknown role {other:?}: pricing, dashboard or both");
            std::process::exit(2);
        }
    }
}
