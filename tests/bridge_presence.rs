//! Node presence over the NATS bridge (feature `nats`): joined, health, left (shutdown, missed
//! heartbeats, lost connection), and subscriptions linked to a node.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;
#[path = "support/bridge_util.rs"]
mod util;

use std::time::Duration;

use nats::NatsServer;
use scopebus::{LinkEnd, NodeHealth, NodeJoined, NodeLeft, NodeLeftReason, ctx};
use tokio::sync::oneshot;
use util::{ToolCalled, bridge, next, until};

const BEAT: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_join_report_health_and_leave() {
    let server = NatsServer::start();
    let (a_up, a_is_up) = oneshot::channel();
    let (a_done, a_may_go) = oneshot::channel::<()>();
    let b = bridge(&server, "b").heartbeat(BEAT);
    let watcher = tokio::spawn(ctx::scope("b").run(async move {
        let mut joined = ctx::subscribe::<NodeJoined>();
        let mut health = ctx::subscribe::<NodeHealth>();
        let mut left = ctx::subscribe::<NodeLeft>();
        let handle = b.install().await.unwrap();
        a_up.send(()).unwrap();
        let a = next(&mut joined, "a joined").await;
        assert_eq!(a.node, "a");
        let beat = next(&mut health, "a's health").await;
        assert_eq!((beat.node.as_str(), beat.heartbeat), ("a", BEAT));
        assert_eq!(beat.instance, a.instance);
        a_done.send(()).unwrap();
        let gone = next(&mut left, "a left").await;
        assert_eq!(
            (gone.node.as_str(), gone.reason),
            ("a", NodeLeftReason::Shutdown)
        );
        assert_eq!(gone.instance, a.instance);
        handle
    }));
    a_is_up.await.unwrap();
    ctx::scope("a")
        .run(async {
            let mut joined = ctx::subscribe::<NodeJoined>();
            let a = bridge(&server, "a")
                .heartbeat(BEAT)
                .install()
                .await
                .unwrap();
            // b answered a's `joined` at once: a knows b without waiting for a heartbeat.
            let b = next(&mut joined, "b, answering").await;
            assert_eq!(b.node, "b");
            assert_ne!(b.instance, a.instance());
            a_may_go.await.unwrap();
        })
        .await;
    watcher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_talking_is_gone_after_three_heartbeats() {
    let server = NatsServer::start();
    let a = bridge(&server, "a").heartbeat(BEAT);
    let (up, is_up) = oneshot::channel();
    // a's scope runs in a task that is aborted: its bridge never says `left`.
    let doomed = tokio::spawn(ctx::scope("a").run(async move {
        let _handle = a.install().await.unwrap();
        up.send(()).unwrap();
        std::future::pending::<()>().await;
    }));
    ctx::scope("b")
        .run(async {
            let mut joined = ctx::subscribe::<NodeJoined>();
            let mut left = ctx::subscribe::<NodeLeft>();
            let _b = bridge(&server, "b")
                .heartbeat(BEAT)
                .install()
                .await
                .unwrap();
            is_up.await.unwrap();
            assert_eq!(next(&mut joined, "a, by its heartbeat").await.node, "a");
            doomed.abort();
            let started = tokio::time::Instant::now();
            let gone = next(&mut left, "a gone").await;
            assert_eq!(
                (gone.node.as_str(), gone.reason),
                ("a", NodeLeftReason::MissedHeartbeats)
            );
            assert!(
                started.elapsed() >= BEAT * 2,
                "not before its heartbeats were missed"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connection_loses_every_node_and_they_rejoin_after() {
    let mut server = NatsServer::start();
    let (up, is_up) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let a = bridge(&server, "a").heartbeat(BEAT);
    let other = tokio::spawn(ctx::scope("a").run(async move {
        let _handle = a.install().await.unwrap();
        up.send(()).unwrap();
        stopped.await.unwrap();
    }));
    ctx::scope("b")
        .run(async {
            let mut joined = ctx::subscribe::<NodeJoined>();
            let mut left = ctx::subscribe::<NodeLeft>();
            let b = bridge(&server, "b")
                .heartbeat(BEAT)
                .install()
                .await
                .unwrap();
            is_up.await.unwrap();
            assert_eq!(next(&mut joined, "a").await.node, "a");
            server.kill();
            let gone = next(&mut left, "a lost with the connection").await;
            assert_eq!(
                (gone.node.as_str(), gone.reason),
                ("a", NodeLeftReason::ConnectionLost)
            );
            server.restart();
            until(&b, "b reconnected", |s| s.reconnects >= 1).await;
            assert_eq!(next(&mut joined, "a again").await.node, "a");
        })
        .await;
    stop.send(()).unwrap();
    other.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_subscription_yields_the_nodes_events_then_says_why_it_ended() {
    let server = NatsServer::start();
    let (up, is_up) = oneshot::channel();
    let (go, may_go) = oneshot::channel::<()>();
    let b = bridge(&server, "b").heartbeat(BEAT).import::<ToolCalled>();
    let follower = tokio::spawn(ctx::scope("b").run(async move {
        let mut joined = ctx::subscribe::<NodeJoined>();
        let handle = b.install().await.unwrap();
        let mut from_a = handle.subscribe_linked::<ToolCalled>("a").unwrap();
        let mut from_c = handle.subscribe_linked::<ToolCalled>("c").unwrap();
        up.send(()).unwrap();
        assert_eq!(next(&mut joined, "a").await.node, "a");
        go.send(()).unwrap();
        let mut got = Vec::new();
        while let Some(call) = futures::StreamExt::next(&mut from_a).await {
            assert_eq!(call.origin().node(), Some("a"));
            got.push(call.n);
        }
        assert_eq!(got, [1, 2, 3], "every event a sent before it left");
        assert_eq!(
            from_a.end_reason(),
            Some(LinkEnd::NodeLeft(NodeLeftReason::Shutdown))
        );
        let c = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut from_c));
        assert!(c.is_none(), "c never spoke, and is not gone");
        assert_eq!(from_c.end_reason(), None);
    }));
    is_up.await.unwrap();
    ctx::scope("a")
        .run(async {
            let _a = bridge(&server, "a")
                .heartbeat(BEAT)
                .export::<ToolCalled>()
                .install()
                .await
                .unwrap();
            may_go.await.unwrap();
            for n in 1..=3 {
                ctx::send(ToolCalled {
                    tool: "t".into(),
                    n,
                });
            }
            // The scope ends here: the bridge drains these three, then says `left`.
        })
        .await;
    follower.await.unwrap();
}
