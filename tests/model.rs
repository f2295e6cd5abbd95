//! Model-based property test (issue 7): random sequences of operations run against the bus
//! and against a plain model of the semantics in SPEC.md, compared after every step.
//!
//! Operations: subscribe (default, bounded drop-newest or drop-oldest with capacity 1 to 3,
//! keep-latest), drop a subscription, send (from the scope's body or from a spawned task),
//! read up to N events of a subscription, pause, start, register the type (a `Producer`),
//! send through the producer, unregister, and nested, isolated and failing scopes containing
//! more operations. Checked: what every send returns (`Delivered(n)`, `Held`, or `NotOwner`
//! while another scope owns the type), every event read and the gap reported before it
//! (`missed()`), `dropped()`, and how and why every stream ends (`ScopeFinished`,
//! `ScopeFailed`, `Unregistered`, `OwnerFinished`, `OwnerFailed`) once what it held was read.
//!
//! Runs on a `current_thread` runtime, where the bus is deterministic. The case count is
//! proptest's (256; `PROPTEST_CASES=100000 cargo test --release --test model` for a long
//! run). Shrunk failures are kept as regression tests at the bottom.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use proptest::prelude::*;
use scopebus::{
    EndReason, Overflow, Producer, RegisterOptions, SendErrorKind, Sent, Subscription,
    TryNextError, ctx,
};

#[derive(Debug)]
struct Ev(u32);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Default,
    DropNewest(usize),
    DropOldest(usize),
    /// `Overflow::Wait`: a plain send to a full queue drops the newest, like `DropNewest`
    /// (only `send_wait` waits), but the drop is critical, not lossy.
    Wait(usize),
    KeepLatest,
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(Policy),
    /// Drops the subscription at this index (modulo the number made so far).
    Drop(usize),
    Send(u32),
    /// The same send from a task spawned in the scope (awaited).
    SpawnSend(u32),
    /// A task that subscribes and waits, aborted: nothing of it remains.
    SpawnAbort,
    /// Registers the type on the current bus (refused if it is registered already).
    Register,
    /// Sends through the producer, if there is one.
    ProducerSend(u32),
    /// Ends the registration, if there is one.
    Unregister,
    /// Reads up to this many events of the subscription at this index.
    Read(usize, usize),
    Pause,
    Start,
    Nested(Vec<Op>),
    Isolated(Vec<Op>),
    /// A nested scope whose body panics after its operations.
    Failing(Vec<Op>),
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        3 => Just(Policy::Default),
        1 => (1usize..4).prop_map(Policy::DropNewest),
        1 => (1usize..4).prop_map(Policy::DropOldest),
        1 => (1usize..4).prop_map(Policy::Wait),
        1 => Just(Policy::KeepLatest),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let leaf = prop_oneof![
        3 => policy().prop_map(Op::Subscribe),
        1 => any::<usize>().prop_map(Op::Drop),
        5 => any::<u32>().prop_map(|v| Op::Send(v % 1000)),
        1 => any::<u32>().prop_map(|v| Op::SpawnSend(v % 1000)),
        1 => Just(Op::SpawnAbort),
        1 => Just(Op::Register),
        2 => any::<u32>().prop_map(|v| Op::ProducerSend(v % 1000)),
        1 => Just(Op::Unregister),
        3 => (any::<usize>(), 1usize..5).prop_map(|(i, n)| Op::Read(i, n)),
        1 => Just(Op::Pause),
        1 => Just(Op::Start),
    ];
    let op = leaf.prop_recursive(3, 48, 8, |inner| {
        let body = || prop::collection::vec(inner.clone(), 0..8);
        prop_oneof![
            body().prop_map(Op::Nested),
            body().prop_map(Op::Isolated),
            body().prop_map(Op::Failing),
        ]
    });
    prop::collection::vec(op, 0..24)
}

/// The model of one subscription.
#[derive(Debug)]
struct Model {
    policy: Policy,
    bus: usize,
    /// Queued events with the number lost just before each.
    items: VecDeque<(u32, u64)>,
    /// Lost before the next event to be queued (or before the end).
    pending_gap: u64,
    dropped: u64,
    end: Option<EndReason>,
    live: bool,
}

impl Model {
    /// Offers `v`; `true` if accepted.
    fn offer(&mut self, v: u32) -> bool {
        if !self.live || self.end.is_some() {
            return false;
        }
        match self.policy {
            Policy::Default => self.items.push_back((v, 0)),
            Policy::KeepLatest => {
                if let Some((_, gap)) = self.items.pop_front() {
                    self.pending_gap += gap + 1;
                    self.dropped += 1;
                }
                self.items
                    .push_back((v, std::mem::take(&mut self.pending_gap)));
            }
            Policy::DropNewest(capacity) | Policy::Wait(capacity) => {
                if self.items.len() >= capacity {
                    self.pending_gap += 1;
                    self.dropped += 1;
                    return false;
                }
                self.items
                    .push_back((v, std::mem::take(&mut self.pending_gap)));
            }
            Policy::DropOldest(capacity) => {
                if self.items.len() >= capacity {
                    let (_, gap) = self.items.pop_front().expect("full");
                    self.dropped += 1;
                    match self.items.front_mut() {
                        Some((_, next)) => *next += gap + 1,
                        None => self.pending_gap += gap + 1,
                    }
                }
                self.items
                    .push_back((v, std::mem::take(&mut self.pending_gap)));
            }
        }
        true
    }
}

#[derive(Default)]
struct BusModel {
    paused: bool,
    held: Vec<u32>,
    /// The scope (by number) that registered the type on this bus.
    owner: Option<usize>,
}

struct World {
    /// The producer of each bus that has one.
    producers: Vec<Option<Producer<Ev>>>,
    /// The current scope's number, and the next one's.
    scope: usize,
    scopes: usize,
    real: Vec<Option<Subscription<Ev>>>,
    model: Vec<Model>,
    buses: Vec<BusModel>,
    /// The bus of the current scope.
    bus: usize,
    /// The subscriptions made in the current scope (indices).
    made_here: Vec<usize>,
}

impl World {
    fn deliver(&mut self, v: u32) -> usize {
        let bus = self.bus;
        self.model
            .iter_mut()
            .filter(|m| m.bus == bus)
            .map(|m| usize::from(m.offer(v)))
            .sum()
    }

    fn check_read(&mut self, index: usize, count: usize) {
        let (Some(real), model) = (&mut self.real[index], &mut self.model[index]) else {
            return;
        };
        for _ in 0..count {
            match (real.try_next(), model.items.pop_front()) {
                (Ok(event), Some((v, gap))) => {
                    assert_eq!(event.0, v, "sub {index} ({:?}): the event", model.policy);
                    assert_eq!(
                        real.missed(),
                        gap,
                        "sub {index} ({:?}): missed before {v}",
                        model.policy
                    );
                }
                (Err(TryNextError::Empty), None) => {
                    assert!(
                        model.end.is_none(),
                        "sub {index}: ended in the model, open for real"
                    );
                    break;
                }
                (Err(TryNextError::Ended(reason)), None) => {
                    assert_eq!(Some(reason), model.end, "sub {index}: the end reason");
                    assert_eq!(
                        real.missed(),
                        model.pending_gap,
                        "sub {index}: missed before the end"
                    );
                    break;
                }
                (real_next, model_next) => panic!(
                    "sub {index} ({:?}): read {real_next:?}, the model says {model_next:?}",
                    model.policy
                ),
            }
        }
        assert_eq!(
            real.dropped(),
            model.dropped,
            "sub {index} ({:?}): dropped()",
            model.policy
        );
    }

    /// Ends every open subscription of the current bus (its registration ended).
    fn end_bus(&mut self, reason: EndReason) {
        let bus = self.bus;
        for model in self.model.iter_mut().filter(|m| m.bus == bus) {
            if model.end.is_none() {
                model.end = Some(reason);
            }
        }
    }

    /// A plain send's outcome, as the model sees it.
    fn send(&mut self, v: u32) -> Result<Sent, SendErrorKind> {
        let bus = self.bus;
        if self.buses[bus].owner.is_some() {
            return Err(SendErrorKind::NotOwner);
        }
        Ok(self.hold_or_deliver(v))
    }

    fn hold_or_deliver(&mut self, v: u32) -> Sent {
        let bus = self.bus;
        if self.buses[bus].paused {
            self.buses[bus].held.push(v);
            Sent::Held
        } else {
            Sent::Delivered(self.deliver(v))
        }
    }

    /// Ends what the current scope made, as its exit does.
    fn end_here(&mut self, made: &[usize], reason: EndReason) {
        for &index in made {
            let model = &mut self.model[index];
            if model.end.is_none() {
                model.end = Some(reason);
            }
        }
    }
}

fn run<'a>(ops: &'a [Op], world: &'a mut World) -> BoxFuture<'a, ()> {
    async move {
        for op in ops {
            match op {
                Op::Subscribe(policy) => {
                    let sub = match *policy {
                        Policy::Default => ctx::subscribe::<Ev>(),
                        Policy::DropNewest(c) => ctx::subscription::<Ev>()
                            .bounded(c, Overflow::DropNewest)
                            .lossy()
                            .subscribe(),
                        Policy::DropOldest(c) => ctx::subscription::<Ev>()
                            .bounded(c, Overflow::DropOldest)
                            .lossy()
                            .subscribe(),
                        Policy::Wait(c) => ctx::subscription::<Ev>()
                            .bounded(c, Overflow::Wait)
                            .subscribe(),
                        Policy::KeepLatest => ctx::subscription::<Ev>().keep_latest().subscribe(),
                    };
                    world.made_here.push(world.real.len());
                    world.real.push(Some(sub));
                    world.model.push(Model {
                        policy: *policy,
                        bus: world.bus,
                        items: VecDeque::new(),
                        pending_gap: 0,
                        dropped: 0,
                        end: None,
                        live: true,
                    });
                }
                Op::Drop(i) if !world.real.is_empty() => {
                    let index = i % world.real.len();
                    world.real[index] = None;
                    world.model[index].live = false;
                }
                Op::Drop(_) => {}
                Op::Send(v) => {
                    let sent = ctx::try_send(Ev(*v)).map_err(|e| e.kind());
                    assert_eq!(sent, world.send(*v), "send {v}");
                }
                Op::SpawnSend(v) => {
                    let v = *v;
                    let task =
                        ctx::spawn(async move { ctx::try_send(Ev(v)).map_err(|e| e.kind()) });
                    let sent = task.await.expect("the task ran");
                    assert_eq!(sent, world.send(v), "send {v} from a task");
                }
                Op::SpawnAbort => {
                    let task = ctx::spawn(async {
                        let mut sub = ctx::subscribe::<Ev>();
                        futures::StreamExt::next(&mut sub).await;
                    });
                    tokio::task::yield_now().await; // it subscribes and parks
                    task.abort();
                    assert!(task.await.is_err(), "aborted");
                }
                Op::Register => {
                    let bus = world.bus;
                    let registered = ctx::register::<Ev>(RegisterOptions::new());
                    match world.buses[bus].owner {
                        Some(_) => assert!(registered.is_err(), "registered twice"),
                        None => {
                            world.producers[bus] = Some(registered.expect("a free type"));
                            world.buses[bus].owner = Some(world.scope);
                        }
                    }
                }
                Op::ProducerSend(v) => {
                    let bus = world.bus;
                    if let Some(producer) = &world.producers[bus] {
                        let sent = producer.send(Ev(*v)).map_err(|e| e.kind());
                        assert_eq!(sent, Ok(world.hold_or_deliver(*v)), "producer send {v}");
                    }
                }
                Op::Unregister => {
                    let bus = world.bus;
                    if let Some(producer) = world.producers[bus].take() {
                        producer.unregister();
                        world.buses[bus].owner = None;
                        world.end_bus(EndReason::Unregistered);
                    }
                }
                Op::Read(i, n) if !world.real.is_empty() => {
                    let index = i % world.real.len();
                    world.check_read(index, *n);
                }
                Op::Read(..) => {}
                Op::Pause => {
                    ctx::pause();
                    world.buses[world.bus].paused = true;
                }
                Op::Start => {
                    ctx::start();
                    let bus = world.bus;
                    world.buses[bus].paused = false;
                    for v in std::mem::take(&mut world.buses[bus].held) {
                        world.deliver(v);
                    }
                }
                Op::Nested(body) | Op::Isolated(body) | Op::Failing(body) => {
                    let isolated = matches!(op, Op::Isolated(_));
                    let failing = matches!(op, Op::Failing(_));
                    let outer_bus = world.bus;
                    let outer_scope = world.scope;
                    world.scopes += 1;
                    world.scope = world.scopes;
                    let outer_made = std::mem::take(&mut world.made_here);
                    if isolated {
                        world.buses.push(BusModel::default());
                        world.producers.push(None);
                        world.bus = world.buses.len() - 1;
                    }
                    let mut scope = ctx::scope("inner");
                    if isolated {
                        scope = scope.isolated();
                    }
                    let inner = scope.run(async {
                        run(body, world).await;
                        if isolated && world.buses[world.bus].paused {
                            // Started before it closes: held events are delivered, not lost.
                            ctx::start();
                            let bus = world.bus;
                            world.buses[bus].paused = false;
                            for v in std::mem::take(&mut world.buses[bus].held) {
                                world.deliver(v);
                            }
                        }
                        if failing {
                            panic!("a failing scope (planned)");
                        }
                    });
                    let outcome = AssertUnwindSafe(inner).catch_unwind().await;
                    assert_eq!(outcome.is_err(), failing);
                    let made = std::mem::replace(&mut world.made_here, outer_made);
                    let reason = if failing {
                        EndReason::ScopeFailed
                    } else {
                        EndReason::ScopeFinished
                    };
                    world.end_here(&made, reason);
                    // A registration this scope made ends with it, after its subscriptions.
                    if world.buses[world.bus].owner == Some(world.scope) {
                        world.buses[world.bus].owner = None;
                        world.producers[world.bus] = None;
                        world.end_bus(if failing {
                            EndReason::OwnerFailed
                        } else {
                            EndReason::OwnerFinished
                        });
                    }
                    world.bus = outer_bus;
                    world.scope = outer_scope;
                }
            }
        }
    }
    .boxed()
}

fn check(ops: Vec<Op>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut world = World {
            producers: vec![None],
            scope: 0,
            scopes: 0,
            real: Vec::new(),
            model: Vec::new(),
            buses: vec![BusModel::default()],
            bus: 0,
            made_here: Vec::new(),
        };
        ctx::scope("root")
            .run(async {
                run(&ops, &mut world).await;
                if world.buses[0].paused {
                    ctx::start();
                    world.buses[0].paused = false;
                    for v in std::mem::take(&mut world.buses[0].held) {
                        world.deliver(v);
                    }
                }
                // Everything still held is read back exactly.
                for index in 0..world.real.len() {
                    world.check_read(index, usize::MAX);
                }
            })
            .await;
    });
}

fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("(planned)") {
                hook(info);
            }
        }));
    });
}

proptest! {
    #[test]
    fn the_bus_behaves_as_its_model(ops in ops()) {
        quiet_planned_panics();
        check(ops);
    }
}
