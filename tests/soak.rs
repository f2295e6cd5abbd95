//! Stress and soak (issue 7): many producers and subscribers across nested scopes, with
//! subscription churn, cancellations and panics, on a 2-worker multi-thread runtime. The
//! invariants are checked as it runs:
//!
//! - a lossless subscription receives every event of each producer, in order, without a gap
//!   or a repeat (from the first it sees; from 0 for producers started after it);
//! - a lossy subscription's `missed()` equals exactly the gap before each event it returns;
//! - no task outlives its scope: every scope counts its live tasks, and the count is 0 when
//!   its `run` returns, however it ended;
//! - no scope takes longer than 30 s (a hang fails the test, it does not stall it);
//! - the heap returns to its baseline once everything is dropped (a counting allocator).
//!
//! Its length is a parameter: `SCOPEBUS_SOAK_SECS` (default 2, what CI runs). A long run:
//! `SCOPEBUS_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`. The seed is
//! printed; `SCOPEBUS_SOAK_SEED` replays one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use scopebus::{EndReason, Overflow, ctx};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Invariant violations, recorded rather than panicked: a panic inside a worker scope would be
/// taken for one of the planned ones.
static VIOLATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            VIOLATIONS.lock().unwrap().push(format!($($msg)+));
        }
    };
}

/// The task counts of cancelled scopes, checked once the root scope has exited.
static CANCELLED: std::sync::Mutex<Vec<Arc<AtomicUsize>>> = std::sync::Mutex::new(Vec::new());

/// A lossless event: producer `producer`'s `seq`-th.
#[derive(Debug)]
struct Msg {
    producer: u64,
    seq: u64,
}

/// An event for lossy subscriptions, numbered per producer.
#[derive(Debug)]
struct Tick {
    producer: u64,
    seq: u64,
}

/// A task's presence, counted in its scope's counter until the task's future is dropped.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// xorshift64*: reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    scopes: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    churned: AtomicU64,
    lossy_checked: AtomicU64,
}

// ANCHOR: order
/// Checks a lossless stream: per producer, contiguous and in order from the first seen.
fn check_order(next_of: &mut HashMap<u64, u64>, msg: &Msg, must_start_at_zero: bool) {
    match next_of.get_mut(&msg.producer) {
        Some(next) => {
            check!(
                msg.seq == *next,
                "producer {}: {} after {} (a gap or a repeat)",
                msg.producer,
                msg.seq,
                *next - 1
            );
            *next = msg.seq + 1;
        }
        None => {
            if must_start_at_zero {
                check!(
                    msg.seq == 0,
                    "producer {} started after the subscription, yet its first was {}",
                    msg.producer,
                    msg.seq
                );
            }
            next_of.insert(msg.producer, msg.seq + 1);
        }
    }
}
// ANCHOR_END: order

static NEXT_PRODUCER: AtomicU64 = AtomicU64::new(0);

/// One worker scope: producers, lossless and lossy subscribers, churn; maybe a panic.
async fn worker(seed: u64, totals: Arc<Totals>, live: Arc<AtomicUsize>) {
    let mut rng = Rng(seed | 1);
    let producers = 1 + rng.below(3);
    let events = 200 + rng.below(2_000);
    let panics = rng.below(8) == 0;
    // Subscribed before any producer of this scope starts: they must see each from 0.
    let mut readers = Vec::new();
    for _ in 0..1 + rng.below(3) {
        readers.push(ctx::subscribe::<Msg>());
    }
    let mut lossy = ctx::subscription::<Tick>()
        .bounded(8, Overflow::DropOldest)
        .lossy()
        .subscribe();
    let ids: Vec<u64> = (0..producers)
        .map(|_| NEXT_PRODUCER.fetch_add(1, Ordering::Relaxed))
        .collect();
    for mut reader in readers {
        let (ids, totals, guard) = (ids.clone(), totals.clone(), Live::new(&live));
        ctx::spawn(async move {
            let _guard = guard;
            let mut next_of = HashMap::new();
            let mut done = 0;
            while done < ids.len() {
                let Some(msg) = reader.next().await else {
                    break;
                };
                totals.received.fetch_add(1, Ordering::Relaxed);
                let own = ids.contains(&msg.producer);
                check_order(&mut next_of, &msg, own);
                if own && msg.seq + 1 == events {
                    done += 1;
                }
            }
            // The body waits for its producers before it returns, so a scope that finished
            // normally ended this subscription after their last event: all of it arrived.
            if done < ids.len() {
                let reason = reader.end_reason();
                check!(
                    reason != Some(EndReason::ScopeFinished),
                    "a reader of a finished scope saw {done} of {} producers end",
                    ids.len()
                );
            }
        });
    }
    let mut producing = Vec::new();
    for &id in &ids {
        let (totals, guard) = (totals.clone(), Live::new(&live));
        producing.push(ctx::spawn(async move {
            let _guard = guard;
            for seq in 0..events {
                ctx::send(Msg { producer: id, seq });
                ctx::send(Tick { producer: id, seq });
                totals.sent.fetch_add(2, Ordering::Relaxed);
                if seq % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Churn: subscriptions made and dropped while everything runs.
    let (totals_churn, guard) = (totals.clone(), Live::new(&live));
    ctx::spawn(async move {
        let _guard = guard;
        for round in 0..20u32 {
            let mut sub = if round % 2 == 0 {
                ctx::subscribe::<Msg>()
            } else {
                ctx::subscription::<Msg>()
                    .bounded(4, Overflow::DropNewest)
                    .subscribe()
            };
            let _ = sub.try_next();
            tokio::task::yield_now().await;
            drop(sub);
            totals_churn.churned.fetch_add(1, Ordering::Relaxed);
        }
    });
    // A slow lossy reader: the gaps it sees are what it was told it missed, and what it was
    // told it missed adds up to what it dropped.
    let (totals_lossy, guard) = (totals.clone(), Live::new(&live));
    ctx::spawn(async move {
        let _guard = guard;
        let mut last: HashMap<u64, u64> = HashMap::new();
        let (mut told, mut seen_gaps) = (0u64, 0u64);
        while let Some(tick) = lossy.next().await {
            told += lossy.missed();
            if let Some(previous) = last.insert(tick.producer, tick.seq) {
                check!(tick.seq > previous, "a lossy stream went backwards");
                seen_gaps += tick.seq - previous - 1;
            }
            totals_lossy.lossy_checked.fetch_add(1, Ordering::Relaxed);
            if totals_lossy.lossy_checked.load(Ordering::Relaxed) % 50 == 0 {
                tokio::task::yield_now().await; // slow, so that it drops
            }
        }
        told += lossy.missed(); // lost just before the end
        check!(
            seen_gaps <= told,
            "gaps {seen_gaps} not all reported ({told} missed)"
        );
        check!(
            told == lossy.dropped(),
            "missed() added up to {told}, dropped() says {}",
            lossy.dropped()
        );
    });
    if panics {
        let guard = Live::new(&live);
        ctx::spawn(async move {
            let _guard = guard;
            tokio::task::yield_now().await;
            panic!("a planned panic in a worker scope");
        });
    }
    for producer in producing {
        let _ = producer.await;
    }
}

#[test]
fn soak() {
    let secs: f64 = std::env::var("SCOPEBUS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("SCOPEBUS_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("soak: {secs} s, seed {seed} (SCOPEBUS_SOAK_SEED={seed} replays it)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Silence the planned panics' messages.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("planned panic") {
            eprintln!("{info}");
        }
    }));
    let round = |runtime: &tokio::runtime::Runtime, seed: u64, for_: Duration| {
        let totals = Arc::new(Totals::default());
        let inner = totals.clone();
        runtime.block_on(async move {
            let totals = inner;
            let started = Instant::now();
            let mut rng = Rng(seed | 1);
            ctx::scope("soak")
                .run(async {
                    while started.elapsed() < for_ {
                        let mut running = Vec::new();
                        for _ in 0..4 {
                            let live = Arc::new(AtomicUsize::new(0));
                            let (seed, totals) = (rng.next(), totals.clone());
                            let cancel_after = (rng.below(4) == 0).then(|| rng.below(5_000));
                            let isolated = rng.below(4) == 0;
                            let scope_live = live.clone();
                            let work = async move {
                                let mut scope = ctx::scope("worker");
                                if isolated {
                                    scope = scope.isolated();
                                }
                                let run = scope.run(worker(seed, totals.clone(), scope_live));
                                let run = AssertUnwindSafe(run).catch_unwind();
                                let outcome = match cancel_after {
                                    Some(micros) => {
                                        let limit = Duration::from_micros(micros);
                                        tokio::time::timeout(limit, run).await.ok()
                                    }
                                    None => Some(run.await),
                                };
                                let left = live.load(Ordering::SeqCst);
                                match outcome {
                                    // A dropped `run` cannot wait: its tasks are aborted and
                                    // every enclosing scope waits for them (checked below,
                                    // when the root scope has exited).
                                    None => {
                                        totals.cancelled.fetch_add(1, Ordering::Relaxed);
                                        CANCELLED.lock().unwrap().push(live);
                                    }
                                    // A scope that returned or failed has no task left.
                                    Some(Err(_)) => {
                                        totals.panicked.fetch_add(1, Ordering::Relaxed);
                                        check!(left == 0, "{left} tasks outlived a failed scope");
                                    }
                                    Some(Ok(())) => {
                                        totals.scopes.fetch_add(1, Ordering::Relaxed);
                                        check!(left == 0, "{left} tasks outlived a finished scope");
                                    }
                                };
                            };
                            running.push(ctx::spawn(async move {
                                tokio::time::timeout(Duration::from_secs(30), work)
                                    .await
                                    .expect("a worker scope hung");
                            }));
                        }
                        for task in running {
                            task.await.expect("the checks passed");
                        }
                    }
                })
                .await;
            // The root scope has exited: it waited for the tasks of every scope cancelled
            // inside it, dropped `run` futures included.
            // Taken, not drained: a drained `Vec` keeps its capacity, which the heap check
            // would take for a leak (it did, before this).
            let cancelled = std::mem::take(&mut *CANCELLED.lock().unwrap());
            for live in cancelled {
                let left = live.load(Ordering::SeqCst);
                check!(
                    left == 0,
                    "{left} tasks of a cancelled scope outlived the root scope"
                );
            }
        });
        totals
    };
    // A short warm-up fills the allocator's and the runtime's caches; then the baseline.
    round(&runtime, seed ^ 0x5eed, Duration::from_millis(200));
    let baseline = LIVE.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let started = Instant::now();
    let totals = round(&runtime, seed, Duration::from_secs_f64(secs));
    let elapsed = started.elapsed();
    let after = LIVE.load(Ordering::SeqCst);
    let peak = PEAK.load(Ordering::SeqCst);
    std::panic::set_hook(hook);
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak: {:.1} s, {} events sent ({:.2} M/s), {} received by lossless readers, {} lossy reads, \
         {} scopes finished, {} cancelled, {} panicked, {} subscriptions churned",
        elapsed.as_secs_f64(),
        t(&totals.sent),
        t(&totals.sent) as f64 / elapsed.as_secs_f64() / 1e6,
        t(&totals.received),
        t(&totals.lossy_checked),
        t(&totals.scopes),
        t(&totals.cancelled),
        t(&totals.panicked),
        t(&totals.churned),
    );
    println!(
        "soak: heap baseline {} KiB, peak {} KiB, after {} KiB",
        baseline / 1024,
        peak / 1024,
        after / 1024
    );
    let violations = VIOLATIONS.lock().unwrap();
    assert!(
        violations.is_empty(),
        "invariants broken: {:#?}",
        &violations[..violations.len().min(20)]
    );
    assert!(
        t(&totals.scopes) > 0 && t(&totals.received) > 0,
        "the soak did some work"
    );
    // Thread-local caches (the clock's anchor, tokio's) may hold a little; nothing grows.
    assert!(
        after <= baseline + 64 * 1024,
        "the heap did not return to its baseline: {after} > {baseline} + 64 KiB"
    );
}
