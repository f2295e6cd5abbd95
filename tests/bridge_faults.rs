//! Faults of the outside world through the NATS bridge (feature `nats`, issue 7), each with its
//! documented outcome. (Kill -9 and restart, and a paused server, are in `tests/bridge.rs` and
//! `tests/bridge_persistent.rs`.)
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;
#[path = "support/bridge_util.rs"]
mod util;

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy};
use nats::NatsServer;
use scopebus::{Bridge, BridgeError, ConnectOptions, Delivery, History, ctx};
use util::{ToolCalled, bridge, next, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_persistent_events_which_are_counted_and_the_bridge_goes_on() {
    let server = NatsServer::start();
    // An operator's stream that keeps 4 events and refuses more (discard new).
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(Config {
        name: "EVENTS".into(),
        subjects: vec!["events.*.*".into()],
        max_messages: 4,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let handle = ctx::scope("full")
        .run(async {
            // The stream exists with other limits: checked, logged, kept.
            let handle = bridge(&server, "full")
                .history(History::new())
                .export_with::<ToolCalled>(Delivery::Persistent)
                .install()
                .await
                .unwrap();
            let mut local = ctx::subscribe::<ToolCalled>();
            for n in 0..8 {
                ctx::send(ToolCalled {
                    tool: "t".into(),
                    n,
                });
            }
            // The local bus is not affected.
            assert_eq!(local.drain().len(), 8);
            handle
        })
        .await;
    let stats = handle.stats();
    // `joined` took one place: three events stored, five refused at once (not retried).
    assert_eq!((stats.exported, stats.publish_error), (3, 5), "{stats:?}");
    assert_eq!(stats.publish_timeout, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_connect_error_and_the_scope_carries_on() {
    let server = NatsServer::start_with(&["--auth", "right"]);
    ctx::scope("auth")
        .run(async {
            let refused = Bridge::new(server.url())
                .options(ConnectOptions::with_token("wrong".into()))
                .install()
                .await;
            match refused {
                Err(BridgeError::Connect(message)) => {
                    assert!(message.to_lowercase().contains("auth"), "{message}")
                }
                other => panic!("expected a connect error, got {other:?}"),
            }
            // Nothing was left behind: the scope's bus works and exits as usual.
            let mut local = ctx::subscribe::<ToolCalled>();
            ctx::send(ToolCalled {
                tool: "t".into(),
                n: 1,
            });
            assert_eq!(next(&mut local, "the local event").await.n, 1);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_refuses_fails_fast_or_is_retried_as_configured() {
    // A port nothing listens on.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("nats://{}", listener.local_addr().unwrap())
    };
    ctx::scope("refused")
        .run(async {
            let started = tokio::time::Instant::now();
            let failed = Bridge::new(nowhere.clone())
                .connect_timeout(Duration::from_secs(10))
                .install()
                .await;
            assert!(matches!(failed, Err(BridgeError::Connect(_))), "{failed:?}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "refused, not timed out"
            );
            // With retry_on_initial_connect, install returns and the bus is unaffected.
            let handle = Bridge::new(nowhere.clone())
                .retry_on_initial_connect()
                .export::<ToolCalled>()
                .drain_timeout(Duration::from_millis(100))
                .install()
                .await
                .unwrap();
            let mut local = ctx::subscribe::<ToolCalled>();
            ctx::send(ToolCalled {
                tool: "t".into(),
                n: 1,
            });
            assert_eq!(next(&mut local, "the local event").await.n, 1);
            until(
                &handle,
                "the publish waits in the client, or times out",
                |s| s.exported + s.publish_timeout == 1,
            )
            .await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_install_or_a_history_query_midway_leaves_nothing_behind() {
    let server = NatsServer::start();
    ctx::scope("dropped")
        .run(async {
            server.pause();
            // A hung server: install waits in its round trip; dropped there.
            let install = bridge(&server, "dropped")
                .history(History::new())
                .export::<ToolCalled>()
                .install();
            assert!(
                tokio::time::timeout(Duration::from_millis(300), install)
                    .await
                    .is_err()
            );
            server.resume();
            // Nothing was left subscribed on the bus (the export subscription is made last).
            let subscribed: usize = ctx::stats().types.iter().map(|t| t.subscriptions).sum();
            assert_eq!(subscribed, 0);
            let handle = bridge(&server, "again")
                .history(History::new())
                .install()
                .await
                .unwrap();
            server.pause();
            let query = handle.history("events.>", 10);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), query)
                    .await
                    .is_err()
            );
            server.resume();
            // History queries dropped at whatever point they reached on a live server.
            for micros in [0, 50, 200, 1_000, 5_000] {
                let query = handle.history("events.>", 10);
                let _ = tokio::time::timeout(Duration::from_micros(micros), query).await;
            }
            // The bridge still answers.
            assert!(!handle.history("events.>", 10).await.unwrap().is_empty());
        })
        .await;
}
