//! The bus (SPEC §2): placement, exact-type routing, fan-out, start position, order, no loss.

// Scopes here often return a task handle to await after the scope has joined the task.
#![allow(clippy::async_yields_async)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{both, multi};
use futures::StreamExt;
use scopebus::{Envelope, Subscription, ctx};

#[derive(Debug, PartialEq)]
struct Msg(u32);

/// Everything a subscription holds right now (the stream is polled until it would wait).
fn drain<E: Send + Sync + 'static>(sub: &mut Subscription<E>) -> Vec<Envelope<E>> {
    let mut out = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        out.push(event);
    }
    out
}

use futures::FutureExt;

fn values(events: Vec<Envelope<Msg>>) -> Vec<u32> {
    events.iter().map(|e| e.0).collect()
}

#[test]
fn independent_roots_do_not_see_each_other() {
    both(|| async {
        let (a_seen, b_seen) = tokio::join!(
            ctx::scope("a").run(async {
                let mut sub = ctx::subscribe::<Msg>();
                tokio::task::yield_now().await;
                ctx::send(Msg(1));
                tokio::task::yield_now().await;
                values(drain(&mut sub))
            }),
            ctx::scope("b").run(async {
                let mut sub = ctx::subscribe::<Msg>();
                tokio::task::yield_now().await;
                ctx::send(Msg(2));
                tokio::task::yield_now().await;
                values(drain(&mut sub))
            }),
        );
        assert_eq!(a_seen, vec![1]);
        assert_eq!(b_seen, vec![2]);
    });
}

#[test]
fn nested_scopes_share_the_bus_both_ways() {
    both(|| async {
        ctx::scope("parent")
            .run(async {
                let mut outer = ctx::subscribe::<Msg>();
                let inner_seen = ctx::scope("child")
                    .run(async {
                        let mut inner = ctx::subscribe::<Msg>();
                        assert_eq!(
                            ctx::send(Msg(1)).delivered(),
                            2,
                            "child send reaches parent and child"
                        );
                        // Events sent by the parent's code reach the child's subscription.
                        ctx::scope("grandchild")
                            .run(async { ctx::send(Msg(2)) })
                            .await;
                        values(drain(&mut inner))
                    })
                    .await;
                assert_eq!(inner_seen, vec![1, 2]);
                assert_eq!(values(drain(&mut outer)), vec![1, 2]);
                // And the parent's own sends reach a child's subscription.
                let seen = ctx::scope("child2")
                    .run(async {
                        let mut inner = ctx::subscribe::<Msg>();
                        let parent = ctx::spawn(async { ctx::send(Msg(3)) });
                        parent.await.unwrap();
                        values(drain(&mut inner))
                    })
                    .await;
                assert_eq!(seen, vec![3]);
            })
            .await;
    });
}

#[test]
fn isolated_scopes_are_separate_both_ways() {
    both(|| async {
        ctx::scope("parent")
            .run(async {
                let mut outer = ctx::subscribe::<Msg>();
                let inner_seen = ctx::scope("isolated")
                    .isolated()
                    .run(async {
                        let mut inner = ctx::subscribe::<Msg>();
                        assert_eq!(ctx::send(Msg(1)).delivered(), 1, "only the isolated bus");
                        // A scope nested in the isolated one shares the isolated bus.
                        let nested = ctx::scope("nested")
                            .run(async {
                                let mut nested = ctx::subscribe::<Msg>();
                                assert_eq!(ctx::send(Msg(2)).delivered(), 2);
                                values(drain(&mut nested))
                            })
                            .await;
                        assert_eq!(nested, vec![2]);
                        values(drain(&mut inner))
                    })
                    .await;
                assert_eq!(inner_seen, vec![1, 2]);
                assert!(drain(&mut outer).is_empty(), "nothing leaks out");

                // Nothing leaks in either.
                let seen = ctx::scope("isolated2")
                    .isolated()
                    .run(async {
                        let mut inner = ctx::subscribe::<Msg>();
                        let parent_send = ctx::spawn(async { ctx::send(Msg(9)) });
                        assert_eq!(
                            parent_send.await.unwrap().delivered(),
                            1,
                            "only the task's own bus"
                        );
                        values(drain(&mut inner))
                    })
                    .await;
                assert_eq!(seen, vec![9], "the task runs in the isolated scope");
                assert_eq!(ctx::send(Msg(10)).delivered(), 1);
                assert_eq!(values(drain(&mut outer)), vec![10]);
            })
            .await;
    });
}

#[derive(Debug, PartialEq)]
struct Wrapper<T>(T);
type Alias = Wrapper<u32>;

#[test]
fn routing_is_by_exact_type() {
    both(|| async {
        ctx::scope("types")
            .run(async {
                let mut small = ctx::subscribe::<Wrapper<u32>>();
                let mut big = ctx::subscribe::<Wrapper<u64>>();
                let mut alias = ctx::subscribe::<Alias>();
                assert_eq!(
                    ctx::send(Wrapper(1u32)).delivered(),
                    2,
                    "Wrapper<u32> and its alias"
                );
                assert_eq!(ctx::send(Wrapper(2u64)).delivered(), 1);
                assert_eq!(
                    ctx::send(Wrapper(3u16)).delivered(),
                    0,
                    "nobody listens to Wrapper<u16>"
                );
                assert_eq!(
                    drain(&mut small).iter().map(|e| e.0).collect::<Vec<_>>(),
                    [1]
                );
                assert_eq!(drain(&mut big).iter().map(|e| e.0).collect::<Vec<_>>(), [2]);
                assert_eq!(
                    drain(&mut alias).iter().map(|e| e.0).collect::<Vec<_>>(),
                    [1]
                );
            })
            .await;
    });
}

#[test]
fn fan_out_counts_and_shares_one_allocation() {
    both(|| async {
        ctx::scope("fanout")
            .run(async {
                assert_eq!(ctx::send(Msg(0)).delivered(), 0);
                let mut subs: Vec<_> = (0..5).map(|_| ctx::subscribe::<Msg>()).collect();
                assert_eq!(ctx::send(Msg(1)).delivered(), 5);
                let dropped = subs.pop().unwrap();
                drop(dropped);
                assert_eq!(
                    ctx::send(Msg(2)).delivered(),
                    4,
                    "a dropped subscription is no longer counted"
                );
                let received: Vec<Vec<Envelope<Msg>>> = subs.iter_mut().map(drain).collect();
                for events in &received {
                    assert_eq!(events.len(), 2);
                    assert!(
                        Envelope::ptr_eq(&events[0], &received[0][0]),
                        "one allocation"
                    );
                }
            })
            .await;
    });
}

#[test]
fn start_position_is_fixed_by_subscribe() {
    both(|| async {
        ctx::scope("start")
            .run(async {
                ctx::send(Msg(1)); // before: never seen
                let mut sub = ctx::subscribe::<Msg>();
                ctx::send(Msg(2)); // after subscribe, before the first poll: seen
                let late = ctx::spawn(async { ctx::send(Msg(3)) });
                late.await.unwrap();
                assert_eq!(values(drain(&mut sub)), vec![2, 3]);
            })
            .await;
    });
}

/// Neither `Clone` nor `Debug`, and not `Unpin` either.
struct Opaque {
    value: u64,
    _pin: std::marker::PhantomPinned,
}

#[test]
fn events_need_neither_clone_nor_debug() {
    both(|| async {
        ctx::scope("opaque")
            .run(async {
                let mut a = ctx::subscribe::<Opaque>();
                let mut b = ctx::subscribe::<Opaque>();
                assert_eq!(
                    ctx::send(Opaque {
                        value: 5,
                        _pin: std::marker::PhantomPinned
                    })
                    .delivered(),
                    2
                );
                assert_eq!(a.next().await.unwrap().value, 5);
                assert_eq!(b.next().await.unwrap().value, 5);
                let sub_debug = format!("{a:?}");
                assert!(sub_debug.contains("Opaque"), "{sub_debug}");
            })
            .await;
    });
}

#[test]
fn slow_subscriber_gets_100k_events_in_order() {
    both(|| async {
        ctx::scope("fifo")
            .run(async {
                let mut sub = ctx::subscribe::<u64>();
                let reader = ctx::spawn(async move {
                    let mut expected = 0u64;
                    while let Some(event) = sub.next().await {
                        assert_eq!(*event, expected, "FIFO, no loss");
                        expected += 1;
                        if expected.is_multiple_of(1000) {
                            tokio::task::yield_now().await; // slow reader
                        }
                    }
                    expected
                });
                for i in 0..100_000u64 {
                    assert_eq!(ctx::send(i).delivered(), 1);
                }
                reader
            })
            .await
            .await
            .map(|count| assert_eq!(count, 100_000))
            .unwrap();
    });
}

#[test]
fn a_scope_has_one_identity_in_its_handle_its_envelopes_and_its_lifecycle_events() {
    both(|| async {
        ctx::scope("root")
            .run(async {
                let mut started = ctx::subscribe::<scopebus::ScopeStarted>();
                let mut sub = ctx::subscribe::<Msg>();
                let parent = ctx::current().info().id();
                for name in [String::from("owned-7"), String::new()] {
                    let owned = !name.is_empty();
                    let scope = if owned {
                        ctx::scope(name)
                    } else {
                        ctx::scope("static")
                    };
                    let handle = scope
                        .run(async {
                            ctx::send(Msg(1));
                            ctx::current()
                        })
                        .await;
                    let event = started.try_next().unwrap();
                    let sent = sub.try_next().unwrap();
                    let info = handle.info();
                    assert_eq!(info.name(), if owned { "owned-7" } else { "static" });
                    // The same shared identity, not three copies.
                    assert!(std::ptr::eq(sent.origin(), info));
                    assert!(std::ptr::eq(&*event.scope, info));
                    assert_eq!(event.parent, parent);
                    assert_ne!(info.id(), parent);
                }
            })
            .await;
    });
}

#[test]
fn sequence_numbers_increase_and_origin_is_the_sender() {
    both(|| async {
        ctx::scope("root")
            .run(async {
                let mut sub = ctx::subscribe::<Msg>();
                ctx::send(Msg(1));
                ctx::scope("child").run(async { ctx::send(Msg(2)) }).await;
                let events = drain(&mut sub);
                assert!(events[0].seq() < events[1].seq());
                assert_eq!(events[0].origin().name(), "root");
                assert_eq!(events[1].origin().name(), "child");
                assert_ne!(events[0].origin().id(), events[1].origin().id());
                assert!(events[0].sent_at() <= events[1].sent_at());
            })
            .await;
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Tagged {
    producer: usize,
    n: u64,
}

#[test]
fn four_producers_four_subscribers_one_order() {
    const PER_PRODUCER: u64 = 20_000;
    multi(async {
        // Consumer tasks are joined by the scope; their handles still hold the results.
        let consumers = ctx::scope("4x4")
            .run(async {
                let consumers: Vec<_> = (0..4)
                    .map(|_| {
                        let mut sub = ctx::subscribe::<Tagged>();
                        ctx::spawn(async move {
                            let mut seen = Vec::new();
                            while let Some(event) = sub.next().await {
                                seen.push((event.seq(), *event));
                            }
                            seen
                        })
                    })
                    .collect();
                // Start all producers together so that they really overlap on both workers.
                let go = Arc::new(AtomicBool::new(false));
                let producers: Vec<_> = (0..4)
                    .map(|producer| {
                        let go = go.clone();
                        ctx::spawn(async move {
                            while !go.load(Ordering::Acquire) {
                                tokio::task::yield_now().await;
                            }
                            for n in 0..PER_PRODUCER {
                                assert_eq!(ctx::send(Tagged { producer, n }).delivered(), 4);
                                if n % 256 == 255 {
                                    tokio::task::yield_now().await;
                                }
                            }
                        })
                    })
                    .collect();
                go.store(true, Ordering::Release);
                for producer in producers {
                    producer.await.unwrap();
                }
                consumers
            })
            .await;
        let mut all = Vec::new();
        for consumer in consumers {
            all.push(consumer.await.unwrap());
        }
        for seen in &all {
            assert_eq!(seen.len() as u64, 4 * PER_PRODUCER, "exact count");
            let mut next = [0u64; 4];
            for (_, event) in seen {
                assert_eq!(event.n, next[event.producer], "per-producer order");
                next[event.producer] += 1;
            }
            assert!(
                seen.windows(2).all(|w| w[0].0 < w[1].0),
                "sequence follows delivery order"
            );
        }
        for seen in &all[1..] {
            assert_eq!(seen, &all[0], "every subscriber sees one identical order");
        }
    });
}

#[test]
fn a_scope_handle_reaches_its_bus_from_an_isolated_scope_and_a_thread() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let app = ctx::current();
                let mut results = ctx::subscribe::<Msg>();
                let inner_seen = ctx::scope("component")
                    .isolated()
                    .run(async move {
                        // Subscribe on the parent's bus from inside the isolated scope.
                        let mut requests = app.subscribe::<u64>();
                        let mut inner = ctx::subscribe::<Msg>();
                        assert_eq!(app.send(7u64).delivered(), 1);
                        assert_eq!(*requests.next().await.unwrap(), 7);
                        // Answer on the parent's bus; the isolated bus does not see it.
                        assert_eq!(app.send(Msg(8)).delivered(), 1);
                        let thread_app = app.clone();
                        let sent = std::thread::spawn(move || thread_app.send(Msg(9)))
                            .join()
                            .unwrap();
                        assert_eq!(sent.delivered(), 1);
                        values(drain(&mut inner))
                    })
                    .await;
                assert!(inner_seen.is_empty());
                let got = drain(&mut results);
                assert_eq!(values(got.clone()), vec![8, 9]);
                assert_eq!(
                    got[0].origin().name(),
                    "app",
                    "the handle's scope is the origin"
                );
            })
            .await;
        // After the scope, the handle's bus is closed.
        let app = ctx::scope("gone").run(async { ctx::current() }).await;
        assert_eq!(
            app.try_send(Msg(1)).unwrap_err().kind(),
            scopebus::SendErrorKind::Closed
        );
        assert_eq!(app.send(Msg(1)).delivered(), 0);
        let mut late = app.subscribe::<Msg>();
        assert!(late.next().await.is_none());
    });
}

/// Subscribes to a type nobody used before when dropped: needs the bus's write lock.
struct SubscribesOnDrop<const N: usize>;

struct FreshType<const N: usize>;

impl<const N: usize> Drop for SubscribesOnDrop<N> {
    fn drop(&mut self) {
        let _late = ctx::subscribe::<FreshType<N>>();
    }
}

#[test]
fn an_event_dropped_undelivered_may_use_the_bus_in_its_drop() {
    both(|| async {
        ctx::scope("drop-reentry")
            .run(async {
                // No topic for the type yet: dropped at once.
                assert_eq!(ctx::send(SubscribesOnDrop::<1>).delivered(), 0);
                // A topic with no subscriber left.
                drop(ctx::subscribe::<SubscribesOnDrop<2>>());
                assert_eq!(ctx::send(SubscribesOnDrop::<2>).delivered(), 0);
                // Delivered, then dropped by the reader.
                let mut sub = ctx::subscribe::<SubscribesOnDrop<3>>();
                assert_eq!(ctx::send(SubscribesOnDrop::<3>).delivered(), 1);
                drop(sub.next().await);
            })
            .await;
    });
}
