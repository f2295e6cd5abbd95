//! Throughput of scopebus against `tokio::sync::broadcast`, side by side in one run.
//!
//! `cargo bench --bench throughput` prints one table: per workload the median of 5 runs for
//! each contender, the ratio scopebus / broadcast (above 1.0: scopebus is faster) and the events
//! each one lost. Multi-thread runtime with 2 workers, 32-byte events; broadcast carries
//! `Arc<Event>` as a user would, with a ring big enough not to lag, and a 1024 ring to show loss.
//! Producers yield every 256 sends. This is the first harness; the performance issue extends it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use scopebus::ctx;
use tokio::sync::broadcast;

/// 32 bytes.
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Event {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
}

fn event(i: u64) -> Event {
    Event {
        a: i,
        b: i,
        c: i,
        d: i,
    }
}

const RUNS: usize = 5;

struct Outcome {
    elapsed: Duration,
    lost: u64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn scopebus_fanout(rt: &tokio::runtime::Runtime, producers: u64, subs: usize, per: u64) -> Outcome {
    let start = Instant::now();
    let received: u64 = rt.block_on(async move {
        let consumers = ctx::scope("bench")
            .run(async move {
                let consumers: Vec<_> = (0..subs)
                    .map(|_| {
                        let mut sub = ctx::subscribe::<Event>();
                        ctx::spawn(async move {
                            let mut n = 0u64;
                            while let Some(e) = sub.next().await {
                                black_box(&*e);
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let producers: Vec<_> = (0..producers)
                    .map(|_| {
                        ctx::spawn(async move {
                            for i in 0..per {
                                ctx::send(event(i));
                                if i % 256 == 255 {
                                    tokio::task::yield_now().await;
                                }
                            }
                        })
                    })
                    .collect();
                for p in producers {
                    p.await.unwrap();
                }
                consumers
            })
            .await;
        let mut total = 0;
        for c in consumers {
            total += c.await.unwrap();
        }
        total
    });
    Outcome {
        elapsed: start.elapsed(),
        lost: producers * per * subs as u64 - received,
    }
}

fn broadcast_fanout(
    rt: &tokio::runtime::Runtime,
    producers: u64,
    subs: usize,
    per: u64,
    capacity: usize,
) -> Outcome {
    let start = Instant::now();
    let received: u64 = rt.block_on(async move {
        let (tx, _) = broadcast::channel::<Arc<Event>>(capacity);
        let consumers: Vec<_> = (0..subs)
            .map(|_| {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        match rx.recv().await {
                            Ok(e) => {
                                black_box(&*e);
                                n += 1;
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => break n,
                        }
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..producers)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        let _ = tx.send(Arc::new(event(i)));
                        if i % 256 == 255 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for p in producers {
            p.await.unwrap();
        }
        let mut total = 0;
        for c in consumers {
            total += c.await.unwrap();
        }
        total
    });
    Outcome {
        elapsed: start.elapsed(),
        lost: producers * per * subs as u64 - received,
    }
}

fn median(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by_key(|o| o.elapsed);
    runs.swap_remove(runs.len() / 2)
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore it.
    let rt = runtime();
    println!("scopebus vs tokio::sync::broadcast — multi-thread runtime, 2 workers, 32-byte event");
    println!("median of {RUNS} runs; ratio = scopebus rate / broadcast (big ring) rate\n");
    println!(
        "| workload | scopebus | broadcast (no lag) | broadcast (1024 ring) | ratio | lost: scopebus / broadcast 1024 |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, producers, subs, per) in [
        ("1 → 1", 1u64, 1usize, 1_000_000u64),
        ("1 → 16", 1, 16, 200_000),
        ("4 → 4", 4, 4, 250_000),
    ] {
        let deliveries = (producers * per * subs as u64) as f64;
        let ours = median(
            (0..RUNS)
                .map(|_| scopebus_fanout(&rt, producers, subs, per))
                .collect(),
        );
        let big = (producers * per) as usize + 1;
        let theirs = median(
            (0..RUNS)
                .map(|_| broadcast_fanout(&rt, producers, subs, per, big))
                .collect(),
        );
        let small = median(
            (0..RUNS)
                .map(|_| broadcast_fanout(&rt, producers, subs, per, 1024))
                .collect(),
        );
        let rate = |o: &Outcome| deliveries / o.elapsed.as_secs_f64() / 1e6;
        println!(
            "| {name} deliveries/s | {:.1} M | {:.1} M | {:.1} M | {:.2} | {} / {} |",
            rate(&ours),
            rate(&theirs),
            rate(&small),
            rate(&ours) / rate(&theirs),
            ours.lost,
            small.lost
        );
        assert_eq!(ours.lost, 0, "scopebus lost events with the default policy");
    }

    // Send with no subscriber: per-send cost.
    const SENDS: u64 = 10_000_000;
    let ours = median(
        (0..RUNS)
            .map(|_| {
                rt.block_on(ctx::scope("idle").run(async {
                    let start = Instant::now();
                    for i in 0..SENDS {
                        black_box(ctx::send(event(i)));
                    }
                    Outcome {
                        elapsed: start.elapsed(),
                        lost: 0,
                    }
                }))
            })
            .collect(),
    );
    let (tx, rx) = broadcast::channel::<Arc<Event>>(16);
    drop(rx);
    let theirs = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                for i in 0..SENDS {
                    // broadcast allocates the Arc before finding out nobody listens.
                    let _ = black_box(tx.send(Arc::new(event(i))));
                }
                Outcome {
                    elapsed: start.elapsed(),
                    lost: 0,
                }
            })
            .collect(),
    );
    let ns = |o: &Outcome| o.elapsed.as_nanos() as f64 / SENDS as f64;
    println!(
        "| send, no subscriber (ns/send) | {:.1} ns | {:.1} ns | – | {:.2} | – |",
        ns(&ours),
        ns(&theirs),
        ns(&theirs) / ns(&ours)
    );
}
