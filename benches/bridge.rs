//! The NATS bridge against raw `async-nats`, in one run: events per second and latency from
//! one bridge to another on loopback, beside a raw publisher and subscriber of the same
//! payload (with and without the bridge's headers).
//!
//! `cargo bench --features nats --bench bridge` (starts its own `nats-server`; see the
//! README's test command for installing one). About 30 s on 2 cores.

#[path = "../tests/support/nats.rs"]
mod nats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nats::NatsServer;
use scopebus::{Bridge, ConnectOptions, ExportQueue, RemoteEvent, ctx};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};

#[derive(Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    a: u64,
    b: u64,
    c: u64,
}

impl RemoteEvent for Tick {
    const KIND: &'static str = "bench";
    const NAME: &'static str = "tick";
}

const EVENTS: u64 = 100_000;
const SAMPLES: usize = 2_000;
const RUNS: usize = 3;

fn options() -> ConnectOptions {
    // Big enough for the whole burst: the default (65 536) drops on the subscriber side.
    ConnectOptions::new()
        .subscription_capacity(1 << 18)
        .client_capacity(1 << 14)
}

fn payload(seq: u64) -> Vec<u8> {
    serde_json::to_vec(&Tick {
        seq,
        a: 1,
        b: 2,
        c: 3,
    })
    .unwrap()
}

/// Events per second and how many arrived, bridge to bridge.
async fn bridge_throughput(url: &str) -> (f64, u64) {
    let (ready_tx, ready) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let b = Bridge::new(url)
        .node("b")
        .options(options())
        .import::<Tick>();
    let receiver = tokio::spawn(ctx::scope("b").run(async move {
        let _bridge = b.install().await.unwrap();
        let mut ticks = ctx::subscribe::<Tick>();
        ready_tx.send(()).unwrap();
        let mut got = 0;
        let mut last = Instant::now();
        while let Ok(Some(tick)) = tokio::time::timeout(Duration::from_secs(2), ticks.next()).await
        {
            got += 1;
            last = Instant::now();
            if tick.seq + 1 == EVENTS {
                break;
            }
        }
        done_tx.send((got, last)).unwrap();
    }));
    ready.await.unwrap();
    let a = Bridge::new(url)
        .node("a")
        .options(options())
        .export::<Tick>()
        .export_queue(ExportQueue::Hold);
    let start = Instant::now();
    ctx::scope("a")
        .run(async move {
            let _bridge = a.install().await.unwrap();
            for seq in 0..EVENTS {
                ctx::send(Tick {
                    seq,
                    a: 1,
                    b: 2,
                    c: 3,
                });
                if seq % 256 == 255 {
                    tokio::task::yield_now().await;
                }
            }
        })
        .await;
    let (got, last) = done.await.unwrap();
    receiver.await.unwrap();
    (got as f64 / last.duration_since(start).as_secs_f64(), got)
}

/// The same payload through raw async-nats (`headers`: the bridge's headers too).
async fn raw_throughput(url: &str, headers: bool) -> (f64, u64) {
    let sub_client = options().connect(url).await.unwrap();
    let mut sub = sub_client.subscribe("raw.tick").await.unwrap();
    sub_client.flush().await.unwrap();
    let _ = sub_client.request("_sync", "".into()).await;
    let pub_client = options().connect(url).await.unwrap();
    let header_map = bridge_like_headers();
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for seq in 0..EVENTS {
            let body = payload(seq).into();
            if headers {
                pub_client
                    .publish_with_headers("raw.tick", header_map.clone(), body)
                    .await
                    .unwrap();
            } else {
                pub_client.publish("raw.tick", body).await.unwrap();
            }
        }
        pub_client.flush().await.unwrap();
    });
    let mut got = 0;
    let mut last = Instant::now();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        got += 1;
        last = Instant::now();
        let tick: Tick = serde_json::from_slice(&message.payload).unwrap();
        if tick.seq + 1 == EVENTS {
            break;
        }
    }
    publisher.await.unwrap();
    (got as f64 / last.duration_since(start).as_secs_f64(), got)
}

fn bridge_like_headers() -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (name, value) in [
        ("Ev-Origin", "0123456789abcdef0123456789abcdef"),
        ("Ev-Node", "a"),
        ("Ev-Scope", "a"),
        ("Ev-Type", "bench.tick/1"),
        ("Ev-Codec", "json"),
        ("Ev-Id", "0123456789abcdef0123456789abcdef-12345"),
        ("Ev-Seq", "12345"),
        ("Ev-Time", "1795479179847112071"),
    ] {
        h.insert(name, value);
    }
    h
}

/// p50 and p99 of send-to-receipt, one event every millisecond, bridge to bridge.
async fn bridge_latency(url: &str) -> (Duration, Duration) {
    let (ready_tx, ready) = oneshot::channel();
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(SAMPLES)));
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<Duration>();
    let b = Bridge::new(url).node("lb").import::<Tick>();
    let times = sent.clone();
    let receiver = tokio::spawn(ctx::scope("lb").run(async move {
        let _bridge = b.install().await.unwrap();
        let mut ticks = ctx::subscribe::<Tick>();
        ready_tx.send(()).unwrap();
        while let Ok(Some(tick)) = tokio::time::timeout(Duration::from_secs(2), ticks.next()).await
        {
            let at = Instant::now();
            let sent_at = times.lock().await[tick.seq as usize];
            lat_tx.send(at - sent_at).unwrap();
            if tick.seq as usize + 1 == SAMPLES {
                break;
            }
        }
    }));
    ready.await.unwrap();
    let a = Bridge::new(url).node("la").export::<Tick>();
    ctx::scope("la")
        .run(async {
            let _bridge = a.install().await.unwrap();
            for seq in 0..SAMPLES as u64 {
                sent.lock().await.push(Instant::now());
                ctx::send(Tick {
                    seq,
                    a: 1,
                    b: 2,
                    c: 3,
                });
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    receiver.await.unwrap();
    let mut all = Vec::new();
    while let Ok(latency) = lat_rx.try_recv() {
        all.push(latency);
    }
    percentiles(all)
}

async fn raw_latency(url: &str) -> (Duration, Duration) {
    let sub_client = async_nats::connect(url).await.unwrap();
    let mut sub = sub_client.subscribe("raw.lat").await.unwrap();
    let _ = sub_client.request("_sync", "".into()).await;
    let pub_client = async_nats::connect(url).await.unwrap();
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(SAMPLES)));
    let times = sent.clone();
    let publisher = tokio::spawn(async move {
        for seq in 0..SAMPLES as u64 {
            times.lock().await.push(Instant::now());
            pub_client
                .publish("raw.lat", payload(seq).into())
                .await
                .unwrap();
            pub_client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut all = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        let at = Instant::now();
        let tick: Tick = serde_json::from_slice(&message.payload).unwrap();
        all.push(at - sent.lock().await[tick.seq as usize]);
        if tick.seq as usize + 1 == SAMPLES {
            break;
        }
    }
    publisher.await.unwrap();
    percentiles(all)
}

fn percentiles(mut all: Vec<Duration>) -> (Duration, Duration) {
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (at(0.50), at(0.99))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = NatsServer::start();
    let url = server.url();
    runtime.block_on(async {
        let (mut bridge, mut raw, mut raw_headers) = (Vec::new(), Vec::new(), Vec::new());
        let mut lost = (0, 0, 0);
        for _ in 0..RUNS {
            // Contenders take turns, so that the machine's slow phases fall on all of them.
            let (rate, got) = bridge_throughput(&url).await;
            bridge.push(rate);
            lost.0 += EVENTS - got;
            let (rate, got) = raw_throughput(&url, false).await;
            raw.push(rate);
            lost.1 += EVENTS - got;
            let (rate, got) = raw_throughput(&url, true).await;
            raw_headers.push(rate);
            lost.2 += EVENTS - got;
        }
        let (bridge, raw, raw_headers) = (median(bridge), median(raw), median(raw_headers));
        let (bridge_p50, bridge_p99) = bridge_latency(&url).await;
        let (raw_p50, raw_p99) = raw_latency(&url).await;
        println!("NATS bridge vs raw async-nats, loopback, 2 workers, median of {RUNS} runs of {EVENTS} events");
        println!();
        println!("| workload | bridge | raw async-nats | raw + the bridge's headers | ratio (bridge / raw) |");
        println!("|---|---|---|---|---|");
        println!(
            "| events/s, one node to another | {:.0} k/s | {:.0} k/s | {:.0} k/s | **{:.2}** ({:.2} vs headers) |",
            bridge / 1e3,
            raw / 1e3,
            raw_headers / 1e3,
            bridge / raw,
            bridge / raw_headers
        );
        println!(
            "| latency p50, one event per ms | {:.0} µs | {:.0} µs | – | **{:.2}** |",
            bridge_p50.as_secs_f64() * 1e6,
            raw_p50.as_secs_f64() * 1e6,
            raw_p50.as_secs_f64() / bridge_p50.as_secs_f64()
        );
        println!(
            "| latency p99 | {:.0} µs | {:.0} µs | – | **{:.2}** |",
            bridge_p99.as_secs_f64() * 1e6,
            raw_p99.as_secs_f64() * 1e6,
            raw_p99.as_secs_f64() / bridge_p99.as_secs_f64()
        );
        println!(
            "| events lost, all runs | {} | {} | {} | |",
            lost.0, lost.1, lost.2
        );
        println!();
        println!("(latency ratios are raw / bridge: above 1.0 would mean the bridge is faster)");
    });
}
