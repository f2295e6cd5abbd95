//! The NATS bridge against a real `nats-server` (feature `nats`): typed round trips, loops and
//! echoes, untyped consumers, bad input, auth, a paused and a killed server.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;
#[path = "support/bridge_util.rs"]
mod util;

use std::time::{Duration, SystemTime};

use nats::NatsServer;
use scopebus::{Bridge, BridgeError, BridgeLagging, ConnectOptions, ExportQueue, RemoteEvent, ctx};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use util::{ToolCalled, ToolDone, bridge, fast, next, until};

/// A raw client, publishing what a bridge never would.
async fn raw(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("raw client")
}

/// Headers a bridge would write, for a raw publisher to break one at a time.
fn headers(id: &str, seq: u64) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Ev-Origin", "ffffffffffffffffffffffffffffffff");
    h.insert("Ev-Node", "raw");
    h.insert("Ev-Scope", "raw-scope");
    h.insert("Ev-Type", "tool.called/1");
    h.insert("Ev-Codec", "json");
    h.insert("Ev-Id", id);
    h.insert("Ev-Seq", seq.to_string().as_str());
    h.insert("Ev-Time", "1700000000000000000");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_event_crosses_to_another_bridge_with_its_origin_and_send_time() {
    let server = NatsServer::start();
    let (ready, is_ready) = oneshot::channel();
    let (sent_tx, sent_rx) = oneshot::channel::<SystemTime>();
    let b = bridge(&server, "node-b");
    let receiver = tokio::spawn(ctx::scope("b-app").run(async move {
        let handle = b.import::<ToolCalled>().install().await.unwrap();
        let mut calls = ctx::subscribe::<ToolCalled>();
        ready.send(()).unwrap();
        let call = next(&mut calls, "the imported event").await;
        assert_eq!(
            *call,
            ToolCalled {
                tool: "grep".into(),
                n: 7
            }
        );
        assert_eq!(call.origin().node(), Some("node-a"));
        assert_eq!(call.origin().name(), "a-app");
        assert_eq!(
            call.sent_at(),
            sent_rx.await.unwrap(),
            "the remote send time, to the ns"
        );
        handle
    }));
    is_ready.await.unwrap();
    let a = bridge(&server, "node-a");
    let sender = ctx::scope("a-app")
        .run(async move {
            let handle = a.export::<ToolCalled>().install().await.unwrap();
            let mut mine = ctx::subscribe::<ToolCalled>();
            ctx::send(ToolCalled {
                tool: "grep".into(),
                n: 7,
            });
            let sent = mine.try_next().unwrap();
            assert_eq!(sent.origin().node(), None, "a local event has no node");
            sent_tx.send(sent.sent_at()).unwrap();
            handle
        })
        .await;
    // The scope's exit drained the export queue: the event went out before `run` returned.
    assert_eq!(sender.stats().exported, 1);
    let receiver = receiver.await.unwrap();
    let stats = receiver.stats();
    assert_eq!(
        (
            stats.imported,
            stats.dropped_own_echo,
            stats.lost_in_transit
        ),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bridges_each_see_each_event_exactly_once() {
    let server = NatsServer::start();
    let names = ["n1", "n2", "n3"];
    let (round_tx, _) = tokio::sync::broadcast::channel::<u32>(4);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(3);
    let mut nodes = Vec::new();
    for name in names {
        let b = bridge(&server, name)
            .export::<ToolCalled>()
            .import::<ToolCalled>();
        let mut rounds = round_tx.subscribe();
        let ready = ready_tx.clone();
        nodes.push(tokio::spawn(ctx::scope(name).run(async move {
            let handle = b.install().await.unwrap();
            let mut calls = ctx::subscribe::<ToolCalled>();
            ready.send(()).await.unwrap();
            let mut seen = Vec::new();
            for round in 1..=2u64 {
                assert_eq!(rounds.recv().await.unwrap() as u64, round);
                ctx::send(ToolCalled {
                    tool: name.into(),
                    n: round,
                });
                // Each node's round-2 event follows anything it could have sent about round 1
                // (one connection keeps its order), so once all three are in, nothing is late.
                while seen.iter().filter(|(_, n)| *n == round).count() != 3 {
                    let call = next(&mut calls, "an event of the round").await;
                    seen.push((call.tool.clone(), call.n));
                }
                ready.send(()).await.unwrap();
            }
            until(&handle, "both own echoes", |s| s.dropped_own_echo == 2).await;
            seen.sort();
            let mut expected: Vec<(String, u64)> = names
                .iter()
                .flat_map(|n| [(n.to_string(), 1), (n.to_string(), 2)])
                .collect();
            expected.sort();
            assert_eq!(
                seen, expected,
                "{name} saw each event once, its own included"
            );
            assert!(calls.try_next().is_err(), "{name}: nothing more");
            handle
        })));
    }
    for round in 1..=2 {
        for _ in 0..3 {
            ready_rx.recv().await.unwrap();
        }
        round_tx.send(round).unwrap();
    }
    for _ in 0..3 {
        ready_rx.recv().await.unwrap();
    }
    for node in nodes {
        let stats = node.await.unwrap().stats();
        assert_eq!(stats.exported, 2, "{stats:?}");
        assert_eq!(stats.imported, 4, "{stats:?}");
        assert_eq!(stats.dropped_own_echo, 2, "{stats:?}");
        assert_eq!(
            stats.dropped_duplicate + stats.lost_in_transit,
            0,
            "{stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_drops_its_own_echo_and_never_reexports_an_import() {
    let server = NatsServer::start();
    let handle = ctx::scope("solo")
        .run(async {
            let handle = bridge(&server, "solo")
                .export::<ToolCalled>()
                .import::<ToolCalled>()
                .install()
                .await
                .unwrap();
            let mut calls = ctx::subscribe::<ToolCalled>();
            ctx::send(ToolCalled {
                tool: "ls".into(),
                n: 1,
            });
            until(&handle, "own echo dropped", |s| s.dropped_own_echo == 1).await;
            // Another node's event is imported once and not published again.
            let raw = raw(&server).await;
            let payload = serde_json::to_vec(&ToolCalled {
                tool: "cp".into(),
                n: 2,
            })
            .unwrap();
            raw.publish_with_headers("events.tool.called", headers("other-1", 1), payload.into())
                .await
                .unwrap();
            until(&handle, "the other node's event", |s| s.imported == 1).await;
            let local = next(&mut calls, "the local event").await;
            let imported = next(&mut calls, "the imported event").await;
            assert_eq!((local.n, local.origin().node()), (1, None));
            assert_eq!((imported.n, imported.origin().node()), (2, Some("raw")));
            assert!(calls.try_next().is_err());
            handle
        })
        .await;
    let stats = handle.stats();
    assert_eq!(
        (stats.exported, stats.imported, stats.dropped_own_echo),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_consumer_receives_raw_envelopes_of_every_matching_type() {
    let server = NatsServer::start();
    ctx::scope("tools")
        .run(async {
            let handle = bridge(&server, "tools")
                .export::<ToolCalled>()
                .export::<ToolDone>()
                .install()
                .await
                .unwrap();
            let mut raw = handle.watch("events.tool.*").await.unwrap();
            ctx::send(ToolCalled {
                tool: "sed".into(),
                n: 3,
            });
            ctx::send(ToolDone { tool: "sed".into() });
            let called = next(&mut raw, "the raw call").await;
            let done = next(&mut raw, "the raw done").await;
            assert_eq!(called.subject, "events.tool.called");
            assert_eq!(called.type_name.as_deref(), Some("tool.called"));
            assert_eq!(called.version, Some(1));
            assert_eq!(called.node.as_deref(), Some("tools"));
            assert_eq!(called.scope.as_deref(), Some("tools"));
            assert_eq!(called.origin.as_deref(), Some(handle.instance()));
            assert!(called.sent_at.is_some());
            assert_eq!(
                called.json().unwrap(),
                serde_json::json!({"tool": "sed", "n": 3})
            );
            assert_eq!(called.decode::<ToolCalled>().unwrap().n, 3);
            assert_eq!(
                (done.subject.as_str(), done.version),
                ("events.tool.done", Some(3))
            );
            // Messages from elsewhere come too, with what their headers lack left empty.
            raw_client_publish(&server, "events.tool.custom", b"not json").await;
            let foreign = next(&mut raw, "the foreign message").await;
            assert_eq!((&foreign.type_name, &foreign.node), (&None, &None));
            assert!(foreign.json().is_err());
            assert!(foreign.to_string().contains("events.tool.custom not json"));
            assert!(matches!(
                handle.watch("events..tool").await,
                Err(BridgeError::InvalidPattern { .. })
            ));
        })
        .await;
}

async fn raw_client_publish(server: &NatsServer, subject: &'static str, payload: &'static [u8]) {
    let client = raw(server).await;
    client.publish(subject, payload.into()).await.unwrap();
    client.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_never_stops_the_bridge() {
    let server = NatsServer::start();
    ctx::scope("target")
        .run(async {
            let handle = bridge(&server, "target")
                .import::<ToolCalled>()
                .max_payload(256)
                .install()
                .await
                .unwrap();
            let mut calls = ctx::subscribe::<ToolCalled>();
            let raw = raw(&server).await;
            let good = serde_json::to_vec(&ToolCalled {
                tool: "ok".into(),
                n: 1,
            })
            .unwrap();
            let send = |h: Option<async_nats::HeaderMap>, payload: Vec<u8>| {
                let raw = raw.clone();
                async move {
                    match h {
                        Some(h) => raw
                            .publish_with_headers("events.tool.called", h, payload.into())
                            .await
                            .unwrap(),
                        None => raw
                            .publish("events.tool.called", payload.into())
                            .await
                            .unwrap(),
                    }
                }
            };
            let with = |name: &str, value: &str| {
                let mut h = headers(&format!("bad-{name}-{value}"), 1);
                h.insert(name, value);
                h
            };
            let without = |name: &str| {
                let mut h = async_nats::HeaderMap::new();
                for (n, values) in headers(&format!("bad-no-{name}"), 1).iter() {
                    if AsRef::<str>::as_ref(n) != name {
                        h.insert(n.clone(), values[0].clone());
                    }
                }
                h
            };
            send(None, good.clone()).await; // no headers at all
            send(Some(without("Ev-Time")), good.clone()).await;
            send(Some(without("Ev-Origin")), good.clone()).await;
            send(Some(with("Ev-Type", "nonsense")), good.clone()).await;
            send(Some(with("Ev-Time", "soon")), good.clone()).await;
            send(Some(with("Ev-Codec", "xml")), good.clone()).await;
            send(Some(with("Ev-Type", "tool.other/1")), good.clone()).await; // not this subject's type
            send(Some(headers("bad-payload", 1)), b"{\"tool\": 5}".to_vec()).await;
            send(Some(headers("bad-utf8", 2)), vec![0xff, 0xfe, 0x00]).await;
            send(Some(headers("big", 3)), vec![b' '; 300]).await; // over max_payload
            send(Some(headers("good-1", 4)), good.clone()).await;
            send(Some(headers("good-1", 4)), good.clone()).await; // the same id again
            send(Some(headers("good-2", 9)), good.clone()).await; // 5..=8 never came
            raw.flush().await.unwrap();
            until(&handle, "every message handled", |s| s.imported == 2).await;
            let stats = handle.stats();
            assert_eq!(stats.missing_header, 3, "{stats:?}");
            assert_eq!(stats.malformed_header, 3, "{stats:?}");
            assert_eq!(stats.unknown_type, 1, "{stats:?}");
            assert_eq!(stats.decode_error, 2, "{stats:?}");
            assert_eq!(stats.oversize, 1, "{stats:?}");
            assert_eq!(stats.dropped_duplicate, 1, "{stats:?}");
            assert_eq!(stats.lost_in_transit, 4, "{stats:?}");
            // The stream was never stuck: both good events arrived, in order.
            assert_eq!(next(&mut calls, "the first good event").await.n, 1);
            assert_eq!(next(&mut calls, "the second good event").await.n, 1);
            assert!(calls.try_next().is_err());
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_settings_are_checked_before_anything_connects() {
    #[derive(Serialize, Deserialize)]
    struct Bad;
    impl RemoteEvent for Bad {
        const KIND: &'static str = "Bad Kind";
        const NAME: &'static str = "x";
    }
    #[derive(Serialize, Deserialize)]
    struct Presence;
    impl RemoteEvent for Presence {
        const KIND: &'static str = "node";
        const NAME: &'static str = "joined";
    }
    #[derive(Serialize, Deserialize)]
    struct Twin;
    impl RemoteEvent for Twin {
        const KIND: &'static str = "tool";
        const NAME: &'static str = "called";
    }
    // Nothing listens on this address: every error below comes before a connection.
    let nowhere = "nats://127.0.0.1:1";
    ctx::scope("checks")
        .run(async {
            let invalid = |b: Bridge| async move {
                match b.install().await {
                    Err(BridgeError::InvalidName { reason, .. }) => reason,
                    other => panic!("expected InvalidName, got {other:?}"),
                }
            };
            let reason = invalid(Bridge::new(nowhere).export::<Bad>()).await;
            assert!(reason.contains("may only hold"), "{reason}");
            let reason = invalid(Bridge::new(nowhere).import::<Presence>()).await;
            assert!(reason.contains("reserved"), "{reason}");
            let reason =
                invalid(Bridge::new(nowhere).export::<ToolCalled>().export::<Twin>()).await;
            assert!(reason.contains("twice"), "{reason}");
            invalid(Bridge::new(nowhere).prefix("events..x")).await;
            invalid(Bridge::new(nowhere).node("Node A")).await;
            assert!(matches!(
                Bridge::new(nowhere)
                    .export_queue(ExportQueue::DropNewest(0))
                    .install()
                    .await,
                Err(BridgeError::InvalidConfig(_))
            ));
            assert!(matches!(
                Bridge::new(nowhere)
                    .connect_timeout(Duration::from_secs(2))
                    .install()
                    .await,
                Err(BridgeError::Connect(_) | BridgeError::Timeout(_))
            ));
        })
        .await;
    assert_eq!(
        Bridge::new(nowhere).install().await.unwrap_err(),
        BridgeError::NoScope
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_options_pass_through_token_auth() {
    let server = NatsServer::start_with(&["--auth", "s3cret"]);
    ctx::scope("auth")
        .run(async {
            let refused = Bridge::new(server.url()).install().await;
            assert!(
                matches!(refused, Err(BridgeError::Connect(_))),
                "{refused:?}"
            );
            let handle = Bridge::new(server.url())
                .options(ConnectOptions::with_token("s3cret".into()))
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            let mut raw = handle.watch("events.>").await.unwrap();
            ctx::send(ToolCalled {
                tool: "id".into(),
                n: 1,
            });
            assert_eq!(
                next(&mut raw, "the event").await.subject,
                "events.tool.called"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_scope_name_are_cleaned_and_counted() {
    let server = NatsServer::start();
    let handle = ctx::scope(String::from("evil\r\nInjected: 1"))
        .run(async {
            let handle = bridge(&server, "evil")
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            let mut raw = handle.watch("events.>").await.unwrap();
            ctx::send(ToolCalled {
                tool: "x".into(),
                n: 1,
            });
            let event = next(&mut raw, "the event").await;
            assert_eq!(event.scope.as_deref(), Some("evil  Injected: 1"));
            handle
        })
        .await;
    assert_eq!(handle.stats().header_cleaned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_never_blocks_the_bus_and_drops_are_counted_and_announced() {
    const SENT: u64 = 2_000;
    let server = NatsServer::start();
    let handle = ctx::scope("busy")
        .run(async {
            // A small client buffer, so that publishes block soon against a hung server (the
            // socket's buffers still take about 150 of these 16 KiB events).
            let handle = Bridge::new(server.url())
                .node("busy")
                .options(fast().client_capacity(16))
                .export::<ToolCalled>()
                .export_queue(ExportQueue::DropNewest(256))
                .publish_timeout(Duration::from_millis(50))
                .drain_timeout(Duration::from_millis(200))
                .install()
                .await
                .unwrap();
            let mut lagging = ctx::subscribe::<BridgeLagging>();
            let mut mine = ctx::subscribe::<ToolCalled>();
            server.pause();
            let tool = "x".repeat(16 * 1024);
            for n in 0..SENT {
                ctx::send(ToolCalled {
                    tool: tool.clone(),
                    n,
                });
                if n % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            // Every local subscriber got everything: the bus never waited on NATS.
            assert_eq!(mine.drain().len() as u64, SENT);
            until(&handle, "a publish timed out", |s| s.publish_timeout > 0).await;
            let lag = next(&mut lagging, "BridgeLagging").await;
            assert_eq!(lag.node, "busy");
            assert!(lag.dropped > 0);
            server.resume();
            handle
        })
        .await;
    let stats = handle.stats();
    assert!(stats.dropped_backpressure > 0, "{stats:?}");
    assert_eq!(
        stats.exported
            + stats.publish_timeout
            + stats.publish_error
            + stats.dropped_backpressure
            + stats.abandoned_at_shutdown,
        SENT,
        "every event is exported or counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_survived_and_the_loss_is_reported() {
    let mut server = NatsServer::start();
    let (ready, is_ready) = oneshot::channel();
    let (go, gone) = oneshot::channel::<()>();
    let b = bridge(&server, "b");
    let receiver = tokio::spawn(ctx::scope("b").run(async move {
        let handle = b.import::<ToolCalled>().install().await.unwrap();
        let mut calls = ctx::subscribe::<ToolCalled>();
        ready.send(handle.clone()).unwrap();
        // Wait for the event sent after the restart: whatever came before is counted.
        loop {
            let call = next(&mut calls, "an event after the restart").await;
            if call.tool == "after" {
                break;
            }
        }
        go.send(()).unwrap();
        handle
    }));
    let b_handle = is_ready.await.unwrap();
    let a = ctx::scope("a")
        .run(async {
            let handle = bridge(&server, "a")
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            ctx::send(ToolCalled {
                tool: "before".into(),
                n: 0,
            });
            until(&b_handle, "the first event", |s| s.imported == 1).await;
            server.kill();
            for n in 1..=5 {
                ctx::send(ToolCalled {
                    tool: "during".into(),
                    n,
                });
            }
            until(&handle, "the disconnection seen", |s| s.disconnects >= 1).await;
            server.restart();
            until(&handle, "reconnected", |s| s.reconnects >= 1).await;
            until(&b_handle, "b reconnected", |s| s.reconnects >= 1).await;
            // b's subscription comes back with its connection; send until one gets through.
            let mut n = 100;
            let arrived = async {
                gone.await.unwrap();
            };
            tokio::pin!(arrived);
            loop {
                ctx::send(ToolCalled {
                    tool: "after".into(),
                    n,
                });
                n += 1;
                tokio::select! {
                    () = &mut arrived => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                assert!(n < 400, "nothing got through after the restart");
            }
            handle
        })
        .await;
    let b = receiver.await.unwrap().stats();
    let a = a.stats();
    // Every event a sent is accounted for at b: received, or reported lost.
    assert!(b.imported >= 2, "{b:?}");
    // The first "after" event b took is at least a's 7th: the ones before it were received
    // or counted as lost.
    assert!(b.imported + b.lost_in_transit >= 7, "a: {a:?} b: {b:?}");
    assert!(a.reconnects >= 1 && b.reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_scope_drains_the_exports_announces_left_and_closes() {
    let server = NatsServer::start();
    let client = raw(&server).await;
    let mut wire = client.subscribe("events.>").await.unwrap();
    client.flush().await.unwrap();
    let handle = ctx::scope("leaving")
        .run(async {
            let handle = bridge(&server, "leaving")
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            for n in 0..100 {
                ctx::send(ToolCalled {
                    tool: "t".into(),
                    n,
                });
            }
            handle // the body ends with 100 events still queued for NATS
        })
        .await;
    assert_eq!(handle.stats().exported, 100);
    let mut subjects = Vec::new();
    loop {
        let message = next(&mut wire, "the node's messages").await;
        subjects.push(message.subject.to_string());
        if message.subject.as_str() == "events.node.left" {
            break;
        }
    }
    let tools = subjects
        .iter()
        .filter(|s| *s == "events.tool.called")
        .count();
    assert_eq!(
        subjects.first().map(String::as_str),
        Some("events.node.joined")
    );
    assert_eq!(tools, 100, "every queued event went out before `left`");
    // The connection is closed: the handle can no longer subscribe.
    assert!(matches!(
        handle.watch("events.>").await,
        Err(BridgeError::Subscribe(_) | BridgeError::Timeout(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_on_initial_connect_a_bridge_starts_before_its_server() {
    let mut server = NatsServer::start();
    server.kill(); // its port is known and free: nothing listens there now
    let mut watcher_server_up = None;
    let handle = ctx::scope("early")
        .run(async {
            let handle = bridge(&server, "early")
                .retry_on_initial_connect()
                .export::<ToolCalled>()
                .export_queue(ExportQueue::Hold)
                .install()
                .await
                .expect("install returns while no server answers");
            ctx::send(ToolCalled {
                tool: "queued".into(),
                n: 1,
            });
            server.restart();
            let raw = raw(&server).await;
            let mut wire = raw.subscribe("events.tool.called").await.unwrap();
            raw.flush().await.unwrap();
            until(&handle, "connected", |s| s.exported >= 1).await;
            ctx::send(ToolCalled {
                tool: "live".into(),
                n: 2,
            });
            let message = next(&mut wire, "an event once the server is up").await;
            watcher_server_up = Some(message.subject.to_string());
            handle
        })
        .await;
    assert_eq!(watcher_server_up.as_deref(), Some("events.tool.called"));
    assert_eq!(handle.stats().exported, 2, "{:?}", handle.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holding_export_queue_loses_nothing_while_the_server_is_paused() {
    let server = NatsServer::start();
    let client = raw(&server).await;
    let mut wire = client.subscribe("events.tool.called").await.unwrap();
    client.flush().await.unwrap();
    let handle = ctx::scope("patient")
        .run(async {
            let handle = Bridge::new(server.url())
                .node("patient")
                .options(fast().client_capacity(16))
                .export::<ToolCalled>()
                .export_queue(ExportQueue::Hold)
                .publish_timeout(Duration::from_secs(10))
                .install()
                .await
                .unwrap();
            server.pause();
            let tool = "x".repeat(16 * 1024);
            for n in 0..500 {
                ctx::send(ToolCalled {
                    tool: tool.clone(),
                    n,
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await; // the publishes block meanwhile
            server.resume();
            handle
        })
        .await;
    let stats = handle.stats();
    assert_eq!(
        (stats.exported, stats.dropped_backpressure),
        (500, 0),
        "{stats:?}"
    );
    for n in 0..500 {
        let message = next(&mut wire, "every held event").await;
        let call: ToolCalled = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(call.n, n, "in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_export_is_counted_and_the_next_one_goes_out() {
    let server = NatsServer::start();
    ctx::scope("big")
        .run(async {
            let handle = bridge(&server, "big")
                .export::<ToolCalled>()
                .max_payload(1024)
                .install()
                .await
                .unwrap();
            let mut wire = handle.watch("events.tool.called").await.unwrap();
            ctx::send(ToolCalled {
                tool: "x".repeat(2048),
                n: 1,
            });
            ctx::send(ToolCalled {
                tool: "small".into(),
                n: 2,
            });
            let got: ToolCalled = next(&mut wire, "the small one").await.decode().unwrap();
            assert_eq!(got.n, 2);
            assert_eq!((handle.stats().oversize, handle.stats().exported), (1, 1));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_bus_holds_imported_events_with_their_origin_until_it_starts() {
    let server = NatsServer::start();
    ctx::scope("paused")
        .paused()
        .run(async {
            let handle = bridge(&server, "paused")
                .import::<ToolCalled>()
                .install()
                .await
                .unwrap();
            let mut calls = ctx::subscribe::<ToolCalled>();
            let raw = raw(&server).await;
            let payload = serde_json::to_vec(&ToolCalled {
                tool: "held".into(),
                n: 1,
            })
            .unwrap();
            raw.publish_with_headers("events.tool.called", headers("held-1", 1), payload.into())
                .await
                .unwrap();
            until(&handle, "imported (held)", |s| s.imported == 1).await;
            assert!(calls.try_next().is_err(), "held while paused");
            assert_eq!(ctx::stats().held, 1);
            ctx::start();
            let call = next(&mut calls, "the held import").await;
            assert_eq!((call.n, call.origin().node()), (1, Some("raw")));
            assert_eq!(
                call.sent_at(),
                std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000)
            );
        })
        .await;
}
