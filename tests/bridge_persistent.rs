//! Persistent delivery through the NATS bridge (feature `nats`): every event stored and
//! acknowledged, and imports that resume without gaps or duplicates after a restart of the
//! importing bridge or of the server.
#![cfg(feature = "nats")]

#[path = "support/nats.rs"]
mod nats;
#[path = "support/bridge_util.rs"]
mod util;

use nats::NatsServer;
use scopebus::{BridgeHandle, Delivery, Subscription, ctx};
use tokio::sync::{mpsc, oneshot};
use util::{ToolCalled, WAIT, bridge, next, until};

/// Receives `count` events and returns their numbers.
async fn take(calls: &mut Subscription<ToolCalled>, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        got.push(next(calls, "a persistent event").await.n);
    }
    got
}

/// Node `b`, importing persistently: makes (or finds) its durable consumer, says so, then
/// takes `count` events once told to.
struct Importer {
    go: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<(Vec<u64>, BridgeHandle)>,
}

async fn importer(server: &NatsServer, count: usize) -> Importer {
    let (ready, is_ready) = oneshot::channel();
    let (go, may_go) = oneshot::channel::<()>();
    let b = bridge(server, "b").import_with::<ToolCalled>(Delivery::Persistent);
    let done = tokio::spawn(ctx::scope("b").run(async move {
        let handle = b.install().await.unwrap();
        let mut calls = ctx::subscribe::<ToolCalled>();
        ready.send(()).unwrap();
        may_go.await.unwrap();
        (take(&mut calls, count).await, handle)
    }));
    is_ready.await.unwrap();
    Importer { go, done }
}

impl Importer {
    async fn finish(self) -> (Vec<u64>, BridgeHandle) {
        self.go.send(()).unwrap();
        self.done.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_importer_resumes_where_it_stopped() {
    let server = NatsServer::start();
    // b makes its durable consumer first: it reads what is published after.
    let first = importer(&server, 5).await;
    let (tx, mut rx) = mpsc::channel::<u64>(16);
    let a = bridge(&server, "a").export_with::<ToolCalled>(Delivery::Persistent);
    let sender = tokio::spawn(ctx::scope("a").run(async move {
        let handle = a.install().await.unwrap();
        while let Some(n) = rx.recv().await {
            ctx::send(ToolCalled {
                tool: "t".into(),
                n,
            });
        }
        handle
    }));
    for n in 1..=5 {
        tx.send(n).await.unwrap();
    }
    let (got, _) = first.finish().await;
    assert_eq!(got, [1, 2, 3, 4, 5]);
    // b is gone; a goes on, then stops (its scope waits for every acknowledgement).
    for n in 6..=10 {
        tx.send(n).await.unwrap();
    }
    drop(tx);
    let a = sender.await.unwrap().stats();
    assert_eq!(a.exported, 10, "every event acknowledged: {a:?}");
    // b again, same node name: exactly what it missed, in order, and nothing twice.
    let second = importer(&server, 5).await;
    let (got, b) = second.finish().await;
    assert_eq!(got, [6, 7, 8, 9, 10]);
    let b = b.stats();
    assert_eq!(
        (b.imported, b.dropped_duplicate, b.lost_in_transit),
        (5, 0, 0),
        "{b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_and_repeats_nothing() {
    let mut server = NatsServer::start();
    let b = importer(&server, 15).await;
    let (b_handle_tx, b_handle) = oneshot::channel();
    let a = ctx::scope("a")
        .run(async {
            let handle = bridge(&server, "a")
                .export_with::<ToolCalled>(Delivery::Persistent)
                .install()
                .await
                .unwrap();
            let b = tokio::spawn(b.finish());
            for n in 1..=5 {
                ctx::send(ToolCalled {
                    tool: "before".into(),
                    n,
                });
            }
            until(&handle, "the first five stored", |s| s.exported == 5).await;
            server.kill();
            for n in 6..=10 {
                ctx::send(ToolCalled {
                    tool: "during".into(),
                    n,
                });
            }
            server.restart();
            until(&handle, "a reconnected", |s| s.reconnects >= 1).await;
            for n in 11..=15 {
                ctx::send(ToolCalled {
                    tool: "after".into(),
                    n,
                });
            }
            b_handle_tx.send(b).unwrap();
            handle
        })
        .await;
    let b = b_handle.await.unwrap();
    let (got, b) = tokio::time::timeout(WAIT * 2, b)
        .await
        .expect("b got all fifteen")
        .unwrap();
    // Nothing lost, nothing twice. Order holds except around the outage: an event whose
    // publish was lost with the connection is re-published (same id) after the ones the
    // client sent on reconnecting, and arrives after them (seen once in CI: 6 after 15).
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=15).collect::<Vec<_>>(),
        "no gap, no duplicate: {got:?}"
    );
    assert_eq!(
        got[..5],
        [1, 2, 3, 4, 5],
        "in order before the outage: {got:?}"
    );
    let after: Vec<u64> = got.iter().copied().filter(|n| *n > 10).collect();
    assert_eq!(after, [11, 12, 13, 14, 15], "in order after it: {got:?}");
    let (a, b) = (a.stats(), b.stats());
    assert_eq!(a.exported, 15, "all stored: {a:?}");
    assert_eq!(a.publish_error + a.publish_timeout, 0, "{a:?}");
    assert_eq!(b.lost_in_transit, 0, "{b:?}");
}
