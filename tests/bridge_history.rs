//! JetStream history through the NATS bridge (feature `nats`): newest N oldest-first, since a
//! time, typed forms, malformed entries, retention, and the stream check at start.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;
#[path = "support/bridge_util.rs"]
mod util;

use std::time::{Duration, SystemTime};

use nats::NatsServer;
use scopebus::{BridgeError, BridgeHandle, History, ctx};
use util::{ToolCalled, ToolDone, WAIT, bridge};

/// Waits until `filter` has `count` events in history (exports are stored asynchronously).
async fn stored(handle: &BridgeHandle, filter: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = handle.history(filter, count + 1).await.unwrap().len();
        if found == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{found} of {count} stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_gives_the_newest_events_oldest_first_raw_typed_and_since() {
    let server = NatsServer::start();
    ctx::scope("tools")
        .run(async {
            let handle = bridge(&server, "tools")
                .history(History::new())
                .export::<ToolCalled>()
                .export::<ToolDone>()
                .install()
                .await
                .unwrap();
            let mut middle = SystemTime::UNIX_EPOCH;
            for n in 0..30 {
                ctx::send(ToolCalled {
                    tool: "grep".into(),
                    n,
                });
                if n % 3 == 0 {
                    ctx::send(ToolDone {
                        tool: format!("done-{n}"),
                    });
                }
                if n == 19 {
                    stored(&handle, "events.tool.called", 20).await;
                    middle = SystemTime::now();
                }
            }
            stored(&handle, "events.tool.called", 30).await;
            stored(&handle, "events.tool.done", 10).await;

            let newest = handle.history("events.tool.called", 5).await.unwrap();
            let ns: Vec<u64> = newest
                .iter()
                .map(|e| e.decode::<ToolCalled>().unwrap().n)
                .collect();
            assert_eq!(ns, [25, 26, 27, 28, 29], "the newest five, oldest first");
            let seqs: Vec<u64> = newest.iter().map(|e| e.stream_seq.unwrap()).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));

            // Across types: the last three of everything kept. (The bridge keeps each type's
            // order; two types' events may be stored in another order than they were sent.)
            let everything = handle.history("events.>", 1000).await.unwrap();
            assert_eq!(everything.len(), 1 + 30 + 10, "joined, 30 calls, 10 dones");
            assert_eq!(everything[0].subject, "events.node.joined");
            let all = handle.history("events.>", 3).await.unwrap();
            let seqs = |events: &[scopebus::RawEvent]| -> Vec<u64> {
                events.iter().map(|e| e.stream_seq.unwrap()).collect()
            };
            assert_eq!(seqs(&all), seqs(&everything[38..]));
            let typed = handle.history_of::<ToolCalled>(3).await.unwrap();
            assert_eq!(
                typed.iter().map(|s| s.event.n).collect::<Vec<_>>(),
                [27, 28, 29]
            );
            assert_eq!(
                (typed[0].node.as_str(), typed[0].scope.as_str()),
                ("tools", "tools")
            );
            let dones = handle.history_of::<ToolDone>(100).await.unwrap();
            assert_eq!(dones.len(), 10);
            assert_eq!(dones[9].event.tool, "done-27");

            let since = handle
                .history_since("events.tool.called", middle, 100)
                .await
                .unwrap();
            let ns: Vec<u64> = since
                .iter()
                .map(|e| e.decode::<ToolCalled>().unwrap().n)
                .collect();
            assert_eq!(
                ns,
                (20..30).collect::<Vec<_>>(),
                "what was stored after `middle`"
            );
            let since = handle
                .history_of_since::<ToolCalled>(middle, 2)
                .await
                .unwrap();
            assert_eq!(
                since.iter().map(|s| s.event.n).collect::<Vec<_>>(),
                [28, 29]
            );

            let future = SystemTime::now() + Duration::from_secs(3600);
            assert!(
                handle
                    .history_since("events.>", future, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                handle
                    .history("events.nothing.*", 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(handle.history("events.>", 0).await.unwrap().is_empty());
            assert!(matches!(
                handle.history("events..x", 1).await,
                Err(BridgeError::InvalidPattern { .. })
            ));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_skipped_counted_and_do_not_use_up_the_limit() {
    let server = NatsServer::start();
    ctx::scope("tools")
        .run(async {
            let handle = bridge(&server, "tools")
                .history(History::new())
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            ctx::send(ToolCalled {
                tool: "a".into(),
                n: 1,
            });
            ctx::send(ToolCalled {
                tool: "b".into(),
                n: 2,
            });
            stored(&handle, "events.tool.called", 2).await;
            let raw = async_nats::connect(server.url()).await.unwrap();
            raw.publish("events.tool.called", "no headers".into())
                .await
                .unwrap();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Ev-Type", "tool.called/1");
            headers.insert("Ev-Node", "x");
            headers.insert("Ev-Id", "x-1");
            headers.insert("Ev-Time", "1");
            raw.publish_with_headers("events.tool.called", headers, "{\"tool\": 1}".into())
                .await
                .unwrap();
            raw.flush().await.unwrap();
            stored(&handle, "events.tool.called", 4).await;
            let typed = handle.history_of::<ToolCalled>(2).await.unwrap();
            assert_eq!(typed.iter().map(|s| s.event.n).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(handle.stats().history_skipped, 2);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_only_the_newest_max_messages() {
    let server = NatsServer::start();
    ctx::scope("tools")
        .run(async {
            let handle = bridge(&server, "tools")
                .history(History::new().stream("SMALL").max_messages(10))
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            for n in 0..25 {
                ctx::send(ToolCalled {
                    tool: "t".into(),
                    n,
                });
            }
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let kept = handle.history_of::<ToolCalled>(100).await.unwrap();
                let ns: Vec<u64> = kept.iter().map(|s| s.event.n).collect();
                if ns == (15..25).collect::<Vec<_>>() {
                    break;
                }
                assert!(ns.len() <= 10, "never more than 10 kept: {ns:?}");
                assert!(tokio::time::Instant::now() < deadline, "kept {ns:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_checked_at_start_and_history_needs_one() {
    let server = NatsServer::start();
    // An operator's stream of the same name, keeping something else.
    let raw = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    ctx::scope("tools")
        .run(async {
            let refused = bridge(&server, "tools")
                .history(History::new())
                .install()
                .await;
            match refused {
                Err(BridgeError::Stream(reason)) => {
                    assert!(reason.contains("orders.>"), "{reason}")
                }
                other => panic!("expected a stream error, got {other:?}"),
            }
            let plain = bridge(&server, "plain").install().await.unwrap();
            assert_eq!(
                plain.history("events.>", 1).await.unwrap_err(),
                BridgeError::NoHistory
            );
            assert!(matches!(
                bridge(&server, "x")
                    .history(History::new().max_messages(0))
                    .install()
                    .await,
                Err(BridgeError::InvalidConfig(_))
            ));
            assert!(matches!(
                bridge(&server, "x")
                    .history(History::new().stream("a.b"))
                    .install()
                    .await,
                Err(BridgeError::InvalidName { .. })
            ));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_events_of_a_quiet_type_are_found_behind_a_chatty_one() {
    let server = NatsServer::start();
    ctx::scope("tools")
        .run(async {
            let handle = bridge(&server, "tools")
                .history(History::new())
                .export::<ToolCalled>()
                .export::<ToolDone>()
                .install()
                .await
                .unwrap();
            for n in 0..50 {
                ctx::send(ToolCalled {
                    tool: "quiet".into(),
                    n,
                });
            }
            stored(&handle, "events.tool.called", 50).await;
            for n in 0..500 {
                ctx::send(ToolDone {
                    tool: format!("chatty-{n}"),
                });
            }
            stored(&handle, "events.tool.done", 500).await;
            // An even spread would put the newest 10 calls in the last 165 messages; they are
            // 500 further back, so the query must widen its span (twice) to reach them.
            let quiet = handle.history_of::<ToolCalled>(10).await.unwrap();
            assert_eq!(
                quiet.iter().map(|s| s.event.n).collect::<Vec<_>>(),
                (40..50).collect::<Vec<_>>()
            );
        })
        .await;
}
