//! The performance suite: scopebus against the alternatives, side by side, in one run.
//!
//! `cargo bench --bench suite` prints one table per family of workloads. Each row gives the
//! scopebus figure, every alternative's figure and the ratio scopebus / best alternative
//! (above 1.0: scopebus is better; for times and bytes the ratio is inverted so that above 1.0
//! still means better), plus the events each contender lost. It also writes an SVG plot of
//! throughput against the number of subscribers to `target/perf-subscribers.svg` (or to the
//! path in `SCOPEBUS_PLOT`).
//!
//! Setup: multi-thread runtime with 2 workers, a 32-byte event; the alternatives carry
//! `Arc<Event>` as a user would (so one allocation per send, like scopebus). Every figure is the
//! median of `RUNS` runs, and the contenders of a row take turns (run 1 of each, then run 2 of
//! each, ...), so that a slow phase of the machine falls on all of them. The alternatives:
//! - `broadcast`: `tokio::sync::broadcast` with a ring big enough never to lag (lossless), and
//!   with a 1024 ring (what people use; it loses events under load);
//! - `async-broadcast` with a capacity big enough never to overflow;
//! - one `tokio::sync::mpsc` unbounded channel per subscriber, and one `flume` unbounded channel
//!   per subscriber (the hand-rolled registry).
//!
//! Keep it under 5 minutes on 2 cores: sizes are chosen for that. `SCOPEBUS_ONLY=throughput`
//! (or `costs`, `tasks`, `policies`, `scaling`) runs one section, for quick comparisons.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use scopebus::{Overflow, ctx};
use tokio::sync::{broadcast, mpsc};

// ---------------------------------------------------------------------------------------------
// A counting allocator, for heap bytes per idle subscriber and per unread event.

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Counting is on only while a memory figure is measured: a counter every thread updates on
/// every allocation is a contended cache line, which would slow every throughput row (all
/// contenders allocate per send) and make them less like production.
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator and only counts sizes. The crate itself forbids
// `unsafe`; a global allocator cannot be written without it, and this one lives in the bench.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live bytes since counting started: only differences taken within one [`counting`] section
/// mean anything.
fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Runs `measure` with the allocator counting.
fn counting<T>(measure: impl FnOnce() -> T) -> T {
    COUNTING.store(true, Ordering::SeqCst);
    let _off = scopeguard::guard((), |()| COUNTING.store(false, Ordering::SeqCst));
    measure()
}

// ---------------------------------------------------------------------------------------------
// The event and the contenders.

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

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Scopebus,
    Broadcast,
    Broadcast1024,
    AsyncBroadcast,
    Mpsc,
    Flume,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Scopebus => "scopebus",
            Who::Broadcast => "broadcast",
            Who::Broadcast1024 => "broadcast 1024",
            Who::AsyncBroadcast => "async-broadcast",
            Who::Mpsc => "mpsc per sub",
            Who::Flume => "flume per sub",
        }
    }

    /// The lossless alternatives, which the ratio compares against.
    fn lossless(self) -> bool {
        self != Who::Broadcast1024
    }
}

const ALL: [Who; 6] = [
    Who::Scopebus,
    Who::Broadcast,
    Who::Broadcast1024,
    Who::AsyncBroadcast,
    Who::Mpsc,
    Who::Flume,
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `fut` as a task on a worker thread and waits for it. Workloads whose timed code is not
/// already in spawned tasks run this way, so that no third thread (the `block_on` caller)
/// competes with the two workers for the two cores.
fn on_worker<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async move { tokio::spawn(fut).await.unwrap() })
}

// ---------------------------------------------------------------------------------------------
// Fan-out: producers × subscribers, counting deliveries.

#[derive(Clone, Copy)]
struct Fanout {
    producers: u64,
    subs: usize,
    /// Events per producer.
    per: u64,
    /// Producers yield every this many sends (`None`: never).
    yield_every: Option<u64>,
}

impl Fanout {
    fn deliveries(self) -> u64 {
        self.producers * self.per * self.subs as u64
    }
}

struct Outcome {
    elapsed: Duration,
    received: u64,
}

async fn maybe_yield(i: u64, every: Option<u64>) {
    if let Some(every) = every
        && i % every == every - 1
    {
        tokio::task::yield_now().await;
    }
}

/// Runs one fan-out; returns the elapsed time and the deliveries that arrived.
fn fanout(rt: &tokio::runtime::Runtime, who: Who, w: Fanout) -> Outcome {
    let start = Instant::now();
    let received = rt.block_on(async move {
        match who {
            Who::Scopebus => scopebus_fanout(w).await,
            Who::Broadcast => broadcast_fanout(w, (w.producers * w.per) as usize + 1).await,
            Who::Broadcast1024 => broadcast_fanout(w, 1024).await,
            Who::AsyncBroadcast => async_broadcast_fanout(w).await,
            Who::Mpsc => registry_fanout::<mpsc::UnboundedReceiver<Arc<Event>>>(w).await,
            Who::Flume => registry_fanout::<flume::Receiver<Arc<Event>>>(w).await,
        }
    });
    Outcome {
        elapsed: start.elapsed(),
        received,
    }
}

async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn scopebus_fanout(w: Fanout) -> u64 {
    let consumers = ctx::scope("bench")
        .run(async move {
            let consumers: Vec<_> = (0..w.subs)
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
            let producers: Vec<_> = (0..w.producers)
                .map(|_| {
                    ctx::spawn(async move {
                        for i in 0..w.per {
                            ctx::send(event(i));
                            maybe_yield(i, w.yield_every).await;
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
}

async fn broadcast_fanout(w: Fanout, capacity: usize) -> u64 {
    let (tx, _) = broadcast::channel::<Arc<Event>>(capacity);
    let consumers: Vec<_> = (0..w.subs)
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
    let producers: Vec<_> = (0..w.producers)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..w.per {
                    let _ = tx.send(Arc::new(event(i)));
                    maybe_yield(i, w.yield_every).await;
                }
            })
        })
        .collect();
    drop(tx);
    join_all(producers).await;
    join_all(consumers).await.into_iter().sum()
}

async fn async_broadcast_fanout(w: Fanout) -> u64 {
    let (tx, rx) = async_broadcast::broadcast::<Arc<Event>>((w.producers * w.per) as usize + 1);
    let consumers: Vec<_> = (0..w.subs)
        .map(|_| {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Ok(e) = rx.recv().await {
                    black_box(&*e);
                    n += 1;
                }
                n
            })
        })
        .collect();
    drop(rx);
    let producers: Vec<_> = (0..w.producers)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..w.per {
                    let _ = tx.try_broadcast(Arc::new(event(i)));
                    maybe_yield(i, w.yield_every).await;
                }
            })
        })
        .collect();
    drop(tx);
    join_all(producers).await;
    join_all(consumers).await.into_iter().sum()
}

/// One unbounded channel per subscriber: what the hand-rolled registry is built from.
trait PerSubscriber: Send + 'static {
    type Tx: Send + Sync + 'static;
    fn channel() -> (Self::Tx, Self);
    fn send(tx: &Self::Tx, event: Arc<Event>);
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Arc<Event>>> + Send;
}

impl PerSubscriber for mpsc::UnboundedReceiver<Arc<Event>> {
    type Tx = mpsc::UnboundedSender<Arc<Event>>;
    fn channel() -> (Self::Tx, Self) {
        mpsc::unbounded_channel()
    }
    fn send(tx: &Self::Tx, event: Arc<Event>) {
        let _ = tx.send(event);
    }
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Arc<Event>>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
}

impl PerSubscriber for flume::Receiver<Arc<Event>> {
    type Tx = flume::Sender<Arc<Event>>;
    fn channel() -> (Self::Tx, Self) {
        flume::unbounded()
    }
    fn send(tx: &Self::Tx, event: Arc<Event>) {
        let _ = tx.send(event);
    }
    async fn recv(&mut self) -> Option<Arc<Event>> {
        self.recv_async().await.ok()
    }
}

/// Fan-out through a registry of per-subscriber channels: a lock around the list of senders,
/// one send per subscriber.
async fn registry_fanout<R: PerSubscriber>(w: Fanout) -> u64 {
    let mut senders = Vec::new();
    let consumers: Vec<_> = (0..w.subs)
        .map(|_| {
            let (tx, mut rx) = R::channel();
            senders.push(tx);
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(e) = rx.recv().await {
                    black_box(&*e);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let registry = Arc::new(RwLock::new(senders));
    let producers: Vec<_> = (0..w.producers)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for i in 0..w.per {
                    {
                        let senders = registry.read().unwrap();
                        if !senders.is_empty() {
                            let e = Arc::new(event(i));
                            for tx in senders.iter() {
                                R::send(tx, e.clone());
                            }
                        }
                    }
                    maybe_yield(i, w.yield_every).await;
                }
            })
        })
        .collect();
    join_all(producers).await;
    registry.write().unwrap().clear();
    join_all(consumers).await.into_iter().sum()
}

fn median_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Runs each measurement once per round for `RUNS` rounds and returns the median of each
/// (by `key`). Taking turns means a slow phase of the machine — this VM has them, lasting
/// seconds — falls on every contender of a row rather than on one, so ratios hold.
fn interleaved<T>(measures: &[&dyn Fn() -> T], key: impl Fn(&T) -> f64) -> Vec<T> {
    let mut runs: Vec<Vec<T>> = measures.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (measure, runs) in measures.iter().zip(&mut runs) {
            runs.push(measure());
        }
    }
    runs.into_iter().map(|runs| median_by(runs, &key)).collect()
}

/// Deliveries per second (median of `RUNS`, contenders taking turns) and lost deliveries, for
/// each contender.
fn fanout_rates(rt: &tokio::runtime::Runtime, contenders: &[Who], w: Fanout) -> Vec<(f64, u64)> {
    let measures: Vec<Box<dyn Fn() -> Outcome + '_>> = contenders
        .iter()
        .map(|&who| Box::new(move || fanout(rt, who, w)) as Box<dyn Fn() -> Outcome>)
        .collect();
    let measures: Vec<&dyn Fn() -> Outcome> = measures.iter().map(|m| &**m).collect();
    interleaved(&measures, |o| o.elapsed.as_secs_f64())
        .into_iter()
        .map(|o| {
            let rate = w.deliveries() as f64 / o.elapsed.as_secs_f64();
            (rate, w.deliveries() - o.received)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The table.

struct Row {
    workload: String,
    unit: &'static str,
    /// `true` when a bigger figure is better (rates); `false` for times and bytes.
    higher_is_better: bool,
    figures: Vec<(Who, f64, Option<u64>)>,
}

impl Row {
    fn ours(&self) -> f64 {
        self.figures
            .iter()
            .find(|(who, ..)| *who == Who::Scopebus)
            .map(|f| f.1)
            .unwrap()
    }

    /// The best lossless alternative, and the ratio (above 1.0: scopebus is better).
    fn best(&self) -> Option<(Who, f64)> {
        let alternatives = self
            .figures
            .iter()
            .filter(|(who, ..)| *who != Who::Scopebus && who.lossless());
        let best = if self.higher_is_better {
            alternatives.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            alternatives.min_by(|a, b| a.1.total_cmp(&b.1))
        }?;
        let ratio = if self.higher_is_better {
            self.ours() / best.1
        } else {
            best.1 / self.ours()
        };
        Some((best.0, ratio))
    }
}

fn format_figure(value: f64, unit: &str) -> String {
    match unit {
        "M/s" => format!("{:.1} M/s", value / 1e6),
        "ns" => format!("{value:.0} ns"),
        "µs" => format!("{value:.2} µs"),
        "B" => format!("{value:.0} B"),
        _ => format!("{value:.2} {unit}"),
    }
}

fn print_table(title: &str, contenders: &[Who], rows: &[Row]) {
    println!("\n### {title}\n");
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for who in contenders {
        let _ = write!(header, " {} |", who.name());
        rule.push_str("---|");
    }
    header.push_str(" ratio (vs best lossless) | lost: scopebus / worst |");
    rule.push_str("---|---|");
    println!("{header}\n{rule}");
    for row in rows {
        let mut line = format!("| {} |", row.workload);
        for who in contenders {
            match row.figures.iter().find(|(w, ..)| w == who) {
                Some((_, value, _)) => {
                    let _ = write!(line, " {} |", format_figure(*value, row.unit));
                }
                None => line.push_str(" – |"),
            }
        }
        match row.best() {
            Some((best, ratio)) => {
                let _ = write!(line, " **{ratio:.2}** ({}) |", best.name());
            }
            None => line.push_str(" – |"),
        }
        let ours_lost = row
            .figures
            .iter()
            .find(|(w, ..)| *w == Who::Scopebus)
            .and_then(|f| f.2);
        let worst_lost = row.figures.iter().filter_map(|f| f.2).max();
        match (ours_lost, worst_lost) {
            (Some(ours), Some(worst)) => {
                let _ = write!(line, " {ours} / {worst} |");
            }
            _ => line.push_str(" – |"),
        }
        println!("{line}");
    }
}

fn fanout_row(rt: &tokio::runtime::Runtime, name: &str, w: Fanout) -> Row {
    let figures = ALL
        .iter()
        .zip(fanout_rates(rt, &ALL, w))
        .map(|(&who, (rate, lost))| {
            if who == Who::Scopebus {
                assert_eq!(lost, 0, "scopebus lost events with the default policy");
            }
            (who, rate, Some(lost))
        })
        .collect();
    Row {
        workload: name.to_owned(),
        unit: "M/s",
        higher_is_better: true,
        figures,
    }
}

// ---------------------------------------------------------------------------------------------
// Send with no subscriber.

fn no_subscriber(rt: &tokio::runtime::Runtime) -> Row {
    const SENDS: u64 = 5_000_000;
    let per_send = |elapsed: Duration| elapsed.as_nanos() as f64 / SENDS as f64;
    let ours = || {
        rt.block_on(ctx::scope("idle").run(async {
            let start = Instant::now();
            for i in 0..SENDS {
                black_box(ctx::send(event(i)));
            }
            per_send(start.elapsed())
        }))
    };
    let (tx, rx) = broadcast::channel::<Arc<Event>>(16);
    drop(rx);
    let broadcast = || {
        let start = Instant::now();
        for i in 0..SENDS {
            // broadcast allocates the Arc before finding out nobody listens.
            let _ = black_box(tx.send(Arc::new(event(i))));
        }
        per_send(start.elapsed())
    };
    let registry: RwLock<Vec<mpsc::UnboundedSender<Arc<Event>>>> = RwLock::new(Vec::new());
    let hand_rolled = || {
        let start = Instant::now();
        for i in 0..SENDS {
            let senders = registry.read().unwrap();
            if !senders.is_empty() {
                let e = Arc::new(event(i));
                for tx in senders.iter() {
                    let _ = tx.send(e.clone());
                }
            }
            black_box(&senders);
        }
        per_send(start.elapsed())
    };
    let [ours, broadcast, hand_rolled] = interleaved(&[&ours, &broadcast, &hand_rolled], |x| *x)
        .try_into()
        .expect("three measurements");
    Row {
        workload: "send, no subscriber".into(),
        unit: "ns",
        higher_is_better: false,
        figures: vec![
            (Who::Scopebus, ours, None),
            (Who::Broadcast, broadcast, None),
            (Who::Mpsc, hand_rolled, None),
            (Who::Flume, hand_rolled, None),
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// Latency: one event every 20 µs, one subscriber, time from send to receipt.

#[derive(Clone, Copy)]
struct Stamped(Instant);

const LATENCY_EVENTS: usize = 5_000;
const GAP: Duration = Duration::from_micros(20);

/// Sends `LATENCY_EVENTS` stamped events through `send`, one every `GAP`.
async fn paced(mut send: impl FnMut(Stamped)) {
    let mut next = Instant::now();
    for _ in 0..LATENCY_EVENTS {
        next += GAP;
        spin_until(next).await;
        send(Stamped(Instant::now()));
    }
}

/// Waits until `deadline` by yielding to the runtime (timers are too coarse for 20 µs), so the
/// reader runs while the producer waits, as it would with a real source of events.
async fn spin_until(deadline: Instant) {
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)
}

#[allow(
    clippy::async_yields_async,
    reason = "the scope returns the reader task's handle"
)]
fn latency(rt: &tokio::runtime::Runtime, who: Who) -> (f64, f64) {
    on_worker(rt, async move {
        let samples: Vec<Duration> = match who {
            Who::Scopebus => ctx::scope("latency")
                .run(async {
                    let mut sub = ctx::subscribe::<Stamped>();
                    let reader = ctx::spawn(async move {
                        let mut samples = Vec::with_capacity(LATENCY_EVENTS);
                        while let Some(e) = sub.next().await {
                            samples.push(e.0.elapsed());
                        }
                        samples
                    });
                    paced(|stamp| {
                        ctx::send(stamp);
                    })
                    .await;
                    reader
                })
                .await
                .await
                .unwrap(),
            Who::Broadcast | Who::Broadcast1024 => {
                let (tx, mut rx) = broadcast::channel::<Arc<Stamped>>(LATENCY_EVENTS + 1);
                let reader = tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(LATENCY_EVENTS);
                    while let Ok(e) = rx.recv().await {
                        samples.push(e.0.elapsed());
                    }
                    samples
                });
                paced(|stamp| {
                    let _ = tx.send(Arc::new(stamp));
                })
                .await;
                drop(tx);
                reader.await.unwrap()
            }
            Who::AsyncBroadcast => {
                let (tx, mut rx) = async_broadcast::broadcast::<Arc<Stamped>>(LATENCY_EVENTS + 1);
                let reader = tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(LATENCY_EVENTS);
                    while let Ok(e) = rx.recv().await {
                        samples.push(e.0.elapsed());
                    }
                    samples
                });
                paced(|stamp| {
                    let _ = tx.try_broadcast(Arc::new(stamp));
                })
                .await;
                drop(tx);
                reader.await.unwrap()
            }
            Who::Mpsc => {
                let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Stamped>>();
                let reader = tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(LATENCY_EVENTS);
                    while let Some(e) = rx.recv().await {
                        samples.push(e.0.elapsed());
                    }
                    samples
                });
                paced(|stamp| {
                    let _ = tx.send(Arc::new(stamp));
                })
                .await;
                drop(tx);
                reader.await.unwrap()
            }
            Who::Flume => {
                let (tx, rx) = flume::unbounded::<Arc<Stamped>>();
                let reader = tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(LATENCY_EVENTS);
                    while let Ok(e) = rx.recv_async().await {
                        samples.push(e.0.elapsed());
                    }
                    samples
                });
                paced(|stamp| {
                    let _ = tx.send(Arc::new(stamp));
                })
                .await;
                drop(tx);
                reader.await.unwrap()
            }
        };
        assert_eq!(samples.len(), LATENCY_EVENTS, "{} lost events", who.name());
        percentiles(samples)
    })
}

fn latency_rows(rt: &tokio::runtime::Runtime) -> Vec<Row> {
    let contenders = [
        Who::Scopebus,
        Who::Broadcast,
        Who::AsyncBroadcast,
        Who::Mpsc,
        Who::Flume,
    ];
    // Each contender's p50 and p99 are the medians over `RUNS` runs, the contenders taking
    // turns (see `interleaved`).
    let mut runs: Vec<Vec<(f64, f64)>> = contenders.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (&who, runs) in contenders.iter().zip(&mut runs) {
            runs.push(latency(rt, who));
        }
    }
    let results: Vec<(Who, f64, f64)> = contenders
        .iter()
        .zip(runs)
        .map(|(&who, runs)| {
            let p50 = median_by(runs.iter().map(|r| r.0).collect(), |x| *x);
            let p99 = median_by(runs.iter().map(|r| r.1).collect(), |x| *x);
            (who, p50, p99)
        })
        .collect();
    let row = |name: &str, pick: fn(&(Who, f64, f64)) -> f64| Row {
        workload: name.to_owned(),
        unit: "µs",
        higher_is_better: false,
        figures: results.iter().map(|r| (r.0, pick(r), None)).collect(),
    };
    vec![
        row("latency p50, one event every 20 µs", |r| r.1),
        row("latency p99", |r| r.2),
    ]
}

// ---------------------------------------------------------------------------------------------
// Memory: heap bytes per idle subscriber (a task parked in `next()`), and per unread event.

const IDLE: usize = 1_000;

fn settle(rt: &tokio::runtime::Runtime) {
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
}

fn idle_bytes(rt: &tokio::runtime::Runtime, who: Who) -> f64 {
    let bytes = match who {
        Who::Scopebus => rt.block_on(async {
            // The scope is open while we measure; its own cost is shared by all subscribers.
            let (measured_tx, measured_rx) = tokio::sync::oneshot::channel::<isize>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let scope = tokio::spawn(ctx::scope("idle").run(async move {
                let base = live_bytes();
                for _ in 0..IDLE {
                    let mut sub = ctx::subscribe::<Event>();
                    ctx::spawn(async move { while sub.next().await.is_some() {} });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = measured_tx.send(live_bytes() - base);
                let _ = done_rx.await;
            }));
            let bytes = measured_rx.await.unwrap();
            let _ = done_tx.send(());
            scope.await.unwrap();
            bytes
        }),
        Who::Broadcast | Who::Broadcast1024 => {
            let (tx, _) = broadcast::channel::<Arc<Event>>(1024);
            let base = live_bytes();
            let tasks: Vec<_> = (0..IDLE)
                .map(|_| {
                    let mut rx = tx.subscribe();
                    rt.spawn(async move { while rx.recv().await.is_ok() {} })
                })
                .collect();
            settle(rt);
            let bytes = live_bytes() - base;
            drop(tx);
            rt.block_on(join_all(tasks));
            bytes
        }
        Who::AsyncBroadcast => {
            let (tx, rx) = async_broadcast::broadcast::<Arc<Event>>(1024);
            let base = live_bytes();
            let tasks: Vec<_> = (0..IDLE)
                .map(|_| {
                    let mut rx = rx.clone();
                    rt.spawn(async move { while rx.recv().await.is_ok() {} })
                })
                .collect();
            settle(rt);
            let bytes = live_bytes() - base;
            drop((tx, rx));
            rt.block_on(join_all(tasks));
            bytes
        }
        Who::Mpsc => idle_registry_bytes::<mpsc::UnboundedReceiver<Arc<Event>>>(rt),
        Who::Flume => idle_registry_bytes::<flume::Receiver<Arc<Event>>>(rt),
    };
    bytes as f64 / IDLE as f64
}

/// Heap bytes of `IDLE` per-subscriber channels, each read by a parked task.
fn idle_registry_bytes<R: PerSubscriber>(rt: &tokio::runtime::Runtime) -> isize {
    let base = live_bytes();
    let mut senders = Vec::with_capacity(IDLE);
    let tasks: Vec<_> = (0..IDLE)
        .map(|_| {
            let (tx, mut rx) = R::channel();
            senders.push(tx);
            rt.spawn(async move { while rx.recv().await.is_some() {} })
        })
        .collect();
    settle(rt);
    let bytes = live_bytes() - base;
    drop(senders);
    rt.block_on(join_all(tasks));
    bytes
}

/// Heap bytes held per unread event by one subscription that is never read.
fn unread_bytes(rt: &tokio::runtime::Runtime) -> Vec<(usize, f64)> {
    rt.block_on(ctx::scope("unread").run(async {
        let mut out = Vec::new();
        for held in [1_000usize, 10_000, 100_000] {
            let base = live_bytes();
            let sub = ctx::subscribe::<Event>();
            for i in 0..held as u64 {
                ctx::send(event(i));
            }
            out.push((held, (live_bytes() - base) as f64 / held as f64));
            drop(sub);
        }
        out
    }))
}

// ---------------------------------------------------------------------------------------------
// Tasks and scopes.

const OPS: u64 = 50_000;

fn per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn task_rows(rt: &tokio::runtime::Runtime) -> Vec<Row> {
    let ours = || {
        on_worker(
            rt,
            ctx::scope("spawn").run(async {
                let start = Instant::now();
                for _ in 0..OPS {
                    ctx::spawn(async {}).await.unwrap();
                }
                per_op(start.elapsed(), OPS)
            }),
        )
    };
    let tracker = || {
        on_worker(rt, async {
            let tracker = tokio_util::task::TaskTracker::new();
            let start = Instant::now();
            for _ in 0..OPS {
                tracker.spawn(async {}).await.unwrap();
            }
            per_op(start.elapsed(), OPS)
        })
    };
    let join_set = || {
        on_worker(rt, async {
            let mut set = tokio::task::JoinSet::new();
            let start = Instant::now();
            for _ in 0..OPS {
                set.spawn(async {});
                set.join_next().await.unwrap().unwrap();
            }
            per_op(start.elapsed(), OPS)
        })
    };
    let hand_rolled_scope = || {
        on_worker(rt, async {
            let parent = tokio_util::sync::CancellationToken::new();
            let start = Instant::now();
            for _ in 0..OPS {
                // What a scope replaces: a tracker, a child token, close and wait.
                let tracker = tokio_util::task::TaskTracker::new();
                let token = parent.child_token();
                tracker.close();
                tracker.wait().await;
                black_box(token);
            }
            per_op(start.elapsed(), OPS)
        })
    };
    let scope = |isolated: bool| {
        on_worker(
            rt,
            ctx::scope("root").run(async move {
                let start = Instant::now();
                for _ in 0..OPS {
                    let scope = ctx::scope("nested");
                    let scope = if isolated { scope.isolated() } else { scope };
                    scope.run(async {}).await;
                }
                per_op(start.elapsed(), OPS)
            }),
        )
    };
    let [ours, tracker, join_set, hand_rolled_scope, nested, isolated] = interleaved(
        &[
            &ours,
            &tracker,
            &join_set,
            &hand_rolled_scope,
            &|| scope(false),
            &|| scope(true),
        ],
        |x| *x,
    )
    .try_into()
    .expect("six measurements");
    let spawn = Row {
        workload: "spawn + await a trivial task".into(),
        unit: "ns",
        higher_is_better: false,
        figures: vec![
            (Who::Scopebus, ours, None),
            (Who::Mpsc, tracker, None),
            (Who::Flume, join_set, None),
        ],
    };
    let nested = Row {
        workload: "nested scope enter + exit".into(),
        unit: "ns",
        higher_is_better: false,
        figures: vec![
            (Who::Scopebus, nested, None),
            (Who::Mpsc, hand_rolled_scope, None),
        ],
    };
    let isolated = Row {
        workload: "isolated scope enter + exit".into(),
        unit: "ns",
        higher_is_better: false,
        figures: vec![
            (Who::Scopebus, isolated, None),
            (Who::Mpsc, hand_rolled_scope, None),
        ],
    };
    vec![spawn, nested, isolated]
}

// ---------------------------------------------------------------------------------------------
// Delivery policies: lossy subscribers, 1 producer → 4 subscribers, sends per second.

fn policy_rows(rt: &tokio::runtime::Runtime) -> Vec<Row> {
    const PER: u64 = 200_000;
    #[derive(Clone, Copy)]
    enum Policy {
        DropOldest,
        KeepLatest,
    }
    let ours = |policy: Policy| {
        let start = Instant::now();
        let received: u64 = on_worker(rt, async move {
            let readers = ctx::scope("policy")
                .run(async {
                    let readers: Vec<_> = (0..4)
                        .map(|_| {
                            let builder = ctx::subscription::<Event>();
                            let mut sub = match policy {
                                Policy::DropOldest => builder.bounded(1024, Overflow::DropOldest),
                                Policy::KeepLatest => builder.keep_latest(),
                            }
                            .lossy()
                            .subscribe();
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
                    for i in 0..PER {
                        ctx::send(event(i));
                        maybe_yield(i, Some(256)).await;
                    }
                    readers
                })
                .await;
            join_all_scoped(readers).await
        });
        (start.elapsed(), received)
    };
    let broadcast_1024 = || {
        let w = Fanout {
            producers: 1,
            subs: 4,
            per: PER,
            yield_every: Some(256),
        };
        let o = fanout(rt, Who::Broadcast1024, w);
        (o.elapsed, o.received)
    };
    let watch = || {
        let start = Instant::now();
        let received: u64 = on_worker(rt, async {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(event(0)));
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    let mut rx = rx.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while rx.changed().await.is_ok() {
                            black_box(&**rx.borrow_and_update());
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            drop(rx);
            for i in 0..PER {
                tx.send_replace(Arc::new(event(i)));
                maybe_yield(i, Some(256)).await;
            }
            drop(tx);
            join_all(readers).await.into_iter().sum()
        });
        (start.elapsed(), received)
    };
    let [drop_oldest, broadcast_1024, keep_latest, watch] = interleaved(
        &[
            &|| ours(Policy::DropOldest),
            &broadcast_1024,
            &|| ours(Policy::KeepLatest),
            &watch,
        ],
        |o| o.0.as_secs_f64(),
    )
    .try_into()
    .expect("four measurements");
    let rate = |o: &(Duration, u64)| PER as f64 / o.0.as_secs_f64();
    let lost = |o: &(Duration, u64)| Some(PER * 4 - o.1);
    vec![
        Row {
            workload: "bounded 1024 drop-oldest, 1 → 4, sends/s (vs broadcast 1024)".into(),
            unit: "M/s",
            higher_is_better: true,
            figures: vec![
                (Who::Scopebus, rate(&drop_oldest), lost(&drop_oldest)),
                (Who::Broadcast, rate(&broadcast_1024), lost(&broadcast_1024)),
            ],
        },
        Row {
            workload: "keep-latest, 1 → 4, sends/s (vs tokio watch)".into(),
            unit: "M/s",
            higher_is_better: true,
            figures: vec![
                (Who::Scopebus, rate(&keep_latest), lost(&keep_latest)),
                (Who::Broadcast, rate(&watch), lost(&watch)),
            ],
        },
    ]
}

async fn join_all_scoped(handles: Vec<scopebus::TaskHandle<u64>>) -> u64 {
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Scaling: subscribers (plotted), types on the bus, scopes alive.

const SWEEP: [usize; 6] = [1, 2, 4, 16, 64, 256];

fn sweep(rt: &tokio::runtime::Runtime) -> Vec<(Who, Vec<f64>)> {
    let contenders = [
        Who::Scopebus,
        Who::Broadcast,
        Who::AsyncBroadcast,
        Who::Mpsc,
        Who::Flume,
    ];
    let mut series: Vec<(Who, Vec<f64>)> =
        contenders.iter().map(|&who| (who, Vec::new())).collect();
    for &subs in &SWEEP {
        // About 1.6 M deliveries per point.
        let per = (1_600_000 / subs as u64).max(2_000);
        let w = Fanout {
            producers: 1,
            subs,
            per,
            yield_every: Some(256),
        };
        for ((_, rates), (rate, _)) in series.iter_mut().zip(fanout_rates(rt, &contenders, w)) {
            rates.push(rate);
        }
    }
    series
}

/// A line chart of deliveries/s against subscribers (log scale), as SVG.
fn svg(series: &[(Who, Vec<f64>)]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 170.0);
    let max = series
        .iter()
        .flat_map(|(_, r)| r.iter().copied())
        .fold(0.0f64, f64::max)
        * 1.1;
    let x = |i: usize| left + (w - left - right) * i as f64 / (SWEEP.len() - 1) as f64;
    let y = |v: f64| h - bottom - (h - bottom - top) * v / max;
    let colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">Deliveries per second against subscribers \
         (1 producer, 2 workers)</text>\n"
    );
    for step in 0..=5 {
        let v = max * step as f64 / 5.0;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4:.0} M</text>",
            y(v),
            w - right,
            left - 6.0,
            y(v) + 4.0,
            v / 1e6
        );
    }
    for (i, subs) in SWEEP.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{subs}</text>",
            x(i),
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">subscribers</text>",
        (left + w - right) / 2.0,
        h - 12.0
    );
    for (k, (who, rates)) in series.iter().enumerate() {
        let colour = colours[k % colours.len()];
        let points: Vec<String> = rates
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(*r)))
            .collect();
        let width = if *who == Who::Scopebus { 3 } else { 2 };
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            w - right + 12.0,
            top + 20.0 + 18.0 * k as f64,
            who.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Send cost (1 subscription) with `others` other types subscribed on the same bus.
fn send_cost_with_types(rt: &tokio::runtime::Runtime) -> Vec<(usize, f64)> {
    struct Other<const N: usize>;
    fn subscribe_others(count: usize) -> Vec<Box<dyn std::any::Any + Send>> {
        // Distinct types from a const generic; `count` of them, up to 64 · 16.
        macro_rules! many {
            ($($n:literal)*) => {{
                let mut subs: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
                $( if subs.len() < count { subs.push(Box::new(ctx::subscribe::<Other<$n>>())); } )*
                subs
            }};
        }
        many!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
              31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58
              59 60 61 62 63)
    }
    [0usize, 8, 64]
        .iter()
        .map(|&others| {
            let ns = median_by(
                (0..RUNS)
                    .map(|_| {
                        rt.block_on(ctx::scope("types").run(async move {
                            let _others = subscribe_others(others);
                            let mut sub = ctx::subscribe::<Event>();
                            let start = Instant::now();
                            for i in 0..200_000u64 {
                                ctx::send(event(i));
                                if i % 256 == 255 {
                                    sub.drain();
                                }
                            }
                            per_op(start.elapsed(), 200_000)
                        }))
                    })
                    .collect(),
                |x| *x,
            );
            (others, ns)
        })
        .collect()
}

/// Send cost (1 subscription) from a scope nested `depth` deep, with `alive` sibling scopes
/// running on the bus.
fn send_cost_with_scopes(rt: &tokio::runtime::Runtime) -> Vec<(usize, f64)> {
    [0usize, 100, 1_000]
        .iter()
        .map(|&alive| {
            let ns = median_by(
                (0..RUNS)
                    .map(|_| {
                        rt.block_on(ctx::scope("scopes").run(async move {
                            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                            for _ in 0..alive {
                                let mut stop = stop_rx.clone();
                                ctx::spawn(ctx::scope("sibling").run(async move {
                                    let _ = stop.changed().await;
                                }));
                            }
                            tokio::task::yield_now().await;
                            let mut sub = ctx::subscribe::<Event>();
                            let start = Instant::now();
                            for i in 0..200_000u64 {
                                ctx::send(event(i));
                                if i % 256 == 255 {
                                    sub.drain();
                                }
                            }
                            let ns = per_op(start.elapsed(), 200_000);
                            let _ = stop_tx.send(true);
                            ns
                        }))
                    })
                    .collect(),
                |x| *x,
            );
            (alive, ns)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore it.
    let started = Instant::now();
    let rt = runtime();
    println!(
        "scopebus performance suite — multi-thread runtime, 2 workers, 32-byte event, median of \
         {RUNS} runs, contenders taking turns"
    );
    println!(
        "ratio = scopebus / best lossless alternative, inverted for times and bytes: above 1.0 \
         means scopebus is better"
    );

    let only = std::env::var("SCOPEBUS_ONLY").ok();
    let run = |section: &str| only.as_deref().is_none_or(|only| only == section);

    if run("throughput") {
        throughput(&rt);
    }
    if run("costs") {
        costs(&rt);
    }
    if run("tasks") {
        let rows = task_rows(&rt);
        print_table(
            "Tasks and scopes (mpsc column: TaskTracker / hand-rolled tracker + token; flume column: JoinSet)",
            &[Who::Scopebus, Who::Mpsc, Who::Flume],
            &rows,
        );
    }
    if run("policies") {
        let rows = policy_rows(&rt);
        print_table(
            "Lossy policies, 1 → 4 (alternative column: broadcast 1024 / tokio watch)",
            &[Who::Scopebus, Who::Broadcast],
            &rows,
        );
    }
    if run("scaling") {
        scaling(&rt);
    }
    println!("\nsuite ran in {:.0} s", started.elapsed().as_secs_f64());
}

fn throughput(rt: &tokio::runtime::Runtime) {
    let rows = vec![
        fanout_row(
            rt,
            "1 → 1, deliveries/s",
            Fanout {
                producers: 1,
                subs: 1,
                per: 1_000_000,
                yield_every: Some(256),
            },
        ),
        fanout_row(
            rt,
            "1 → 16, deliveries/s",
            Fanout {
                producers: 1,
                subs: 16,
                per: 100_000,
                yield_every: Some(256),
            },
        ),
        fanout_row(
            rt,
            "4 → 4, deliveries/s",
            Fanout {
                producers: 4,
                subs: 4,
                per: 100_000,
                yield_every: Some(256),
            },
        ),
        fanout_row(
            rt,
            "burst: 100 000 events → 4, producer never yields",
            Fanout {
                producers: 1,
                subs: 4,
                per: 100_000,
                yield_every: None,
            },
        ),
    ];
    print_table("Throughput", &ALL, &rows);
}

fn costs(rt: &tokio::runtime::Runtime) {
    let mut rows = vec![no_subscriber(rt)];
    rows.extend(latency_rows(rt));
    let contenders = [
        Who::Scopebus,
        Who::Broadcast,
        Who::AsyncBroadcast,
        Who::Mpsc,
        Who::Flume,
    ];
    let idle = Row {
        workload: "heap per idle subscriber (task parked in next)".into(),
        unit: "B",
        higher_is_better: false,
        figures: contenders
            .iter()
            .map(|&who| (who, counting(|| idle_bytes(rt, who)), None))
            .collect(),
    };
    rows.push(idle);
    print_table("Costs", &contenders, &rows);
    println!(
        "\n(no-subscriber: the mpsc and flume columns are the hand-rolled registry, a `RwLock` \
         around an empty `Vec` of senders)"
    );
}

fn scaling(rt: &tokio::runtime::Runtime) {
    println!("\n### Scaling\n");
    let series = sweep(rt);
    let mut header = String::from("| subscribers |");
    let mut rule = String::from("|---|");
    for (who, _) in &series {
        let _ = write!(header, " {} |", who.name());
        rule.push_str("---|");
    }
    println!("{header} ratio |\n{rule}---|");
    for (i, subs) in SWEEP.iter().enumerate() {
        let mut line = format!("| {subs} |");
        for (_, rates) in &series {
            let _ = write!(line, " {:.1} M/s |", rates[i] / 1e6);
        }
        let best = series[1..].iter().map(|(_, r)| r[i]).fold(0.0f64, f64::max);
        let _ = write!(line, " **{:.2}** |", series[0].1[i] / best);
        println!("{line}");
    }
    let path =
        std::env::var("SCOPEBUS_PLOT").unwrap_or_else(|_| "target/perf-subscribers.svg".into());
    std::fs::write(&path, svg(&series)).expect("write the plot");
    println!("\nplot written to {path}");

    println!("\n| other types subscribed on the bus | send + read, ns |\n|---|---|");
    for (others, ns) in send_cost_with_types(rt) {
        println!("| {others} | {ns:.0} |");
    }
    println!("\n| sibling scopes alive on the bus | send + read, ns |\n|---|---|");
    for (alive, ns) in send_cost_with_scopes(rt) {
        println!("| {alive} | {ns:.0} |");
    }
    println!("\n| events held by an unread subscription | heap bytes per event |\n|---|---|");
    for (held, bytes) in counting(|| unread_bytes(rt)) {
        println!("| {held} | {bytes:.0} |");
    }
}
