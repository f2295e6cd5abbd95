//! The shared log behind default subscriptions (`src/log.rs`): readers at different paces,
//! start positions inside a segment, memory released as readers move on, and payload `Drop`
//! code that uses the bus while segments are freed.
#![allow(clippy::async_yields_async)]

mod common;

use common::{DropCounter, Guard, both};
use futures::StreamExt;
use scopebus::{Subscription, ctx};

#[derive(Debug)]
struct N(u32);

fn values(sub: &mut Subscription<N>) -> Vec<u32> {
    sub.drain().iter().map(|n| n.0).collect()
}

/// More than one segment of the log.
const MANY: u32 = 1_000;

#[test]
fn readers_starting_mid_segment_get_exactly_what_was_sent_after_they_subscribed() {
    both(|| {
        ctx::scope("app").run(async {
            let mut a = ctx::subscribe::<N>();
            for i in 0..100 {
                ctx::send(N(i));
            }
            let mut b = ctx::subscribe::<N>(); // 100 is not a segment boundary
            assert_eq!(b.len(), 0);
            for i in 100..MANY {
                ctx::send(N(i));
            }
            assert_eq!(a.len(), MANY as usize);
            assert_eq!(b.len(), (MANY - 100) as usize);
            assert_eq!(values(&mut a), (0..MANY).collect::<Vec<_>>());
            assert_eq!(values(&mut b), (100..MANY).collect::<Vec<_>>());
            assert!(a.is_empty() && b.is_empty());
        })
    });
}

#[test]
fn readers_at_different_paces_each_get_everything_in_order() {
    both(|| {
        ctx::scope("app")
            .run(async {
                let mut eager = ctx::subscribe::<N>();
                let mut bursty = ctx::subscribe::<N>();
                let mut late = ctx::subscribe::<N>();
                let eager = ctx::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(n) = eager.next().await {
                        got.push(n.0);
                    }
                    got
                });
                let bursty = ctx::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(n) = bursty.next().await {
                        got.push(n.0);
                        if n.0 % 97 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    got
                });
                let producer = ctx::spawn(async {
                    for i in 0..10 * MANY {
                        ctx::send(N(i));
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
                producer.await.unwrap();
                let late = values(&mut late);
                let expected: Vec<u32> = (0..10 * MANY).collect();
                assert_eq!(late, expected);
                (eager, bursty, expected)
            })
            .then(|(eager, bursty, expected)| async move {
                assert_eq!(eager.await.unwrap(), expected);
                assert_eq!(bursty.await.unwrap(), expected);
            })
    });
}

struct Counted(#[allow(dead_code)] Guard);

#[test]
fn payloads_are_freed_as_readers_move_on() {
    both(|| async {
        let counter = DropCounter::default();
        let c = counter.clone();
        ctx::scope("app")
            .run(async move {
                let mut fast = ctx::subscribe::<Counted>();
                let mut slow = ctx::subscribe::<Counted>();
                for _ in 0..MANY {
                    ctx::send(Counted(c.guard()));
                }
                assert_eq!(c.live(), MANY as usize, "nobody has read yet");
                assert_eq!(fast.drain().len(), MANY as usize);
                assert_eq!(
                    c.live(),
                    MANY as usize,
                    "the slow reader still holds them all"
                );
                assert_eq!(slow.drain().len(), MANY as usize);
                // Freed, except at most one segment the writer is still filling.
                assert!(c.live() < 128, "{} still alive", c.live());
                drop(fast);
                assert!(c.live() < 128);
                drop(slow); // the last reader: the log lets go of everything
                assert_eq!(c.live(), 0);
                // An unread subscription holds what it has not read, and frees it when dropped.
                let unread = ctx::subscribe::<Counted>();
                for _ in 0..MANY {
                    ctx::send(Counted(c.guard()));
                }
                assert_eq!(c.live(), MANY as usize);
                drop(unread);
                assert_eq!(c.live(), 0);
            })
            .await;
        assert_eq!(counter.live(), 0);
    });
}

/// An event whose `Drop` sends on the bus: freeing a segment must never happen under a lock.
struct Echo {
    echo: bool,
}

impl Drop for Echo {
    fn drop(&mut self) {
        if self.echo {
            let _ = ctx::try_send(Echo { echo: false });
            let _ = ctx::try_subscribe::<N>();
        }
    }
}

#[test]
fn a_payload_whose_drop_uses_the_bus_does_not_deadlock_when_its_segment_is_freed() {
    both(|| {
        ctx::scope("app")
            .run(async {
                let mut echoes = ctx::subscribe::<Echo>();
                let reader = ctx::spawn(async move {
                    let mut originals = 0;
                    while let Some(echo) = echoes.next().await {
                        originals += usize::from(echo.echo);
                    }
                    originals
                });
                for _ in 0..MANY {
                    ctx::send(Echo { echo: true });
                    tokio::task::yield_now().await;
                }
                reader
            })
            .then(|reader| async move {
                assert_eq!(reader.await.unwrap(), MANY as usize);
            })
    });
}

use futures::FutureExt;

/// A slot written while its type had one default subscriber is handed to that reader (its
/// reference count taken over, not cloned). Readers that come and go between writes must still
/// each get exactly their events, and every payload must be freed exactly once.
#[test]
fn sole_and_shared_slots_each_reach_exactly_their_readers_and_are_freed_once() {
    both(|| async {
        let payloads = DropCounter::default();
        let seen = payloads.clone();
        ctx::scope("app")
            .run(async move {
                let mut a = ctx::subscribe::<Guard>();
                for _ in 0..100 {
                    ctx::send(seen.guard()); // a alone: sole slots
                }
                let mut b = ctx::subscribe::<Guard>();
                for _ in 0..100 {
                    ctx::send(seen.guard()); // shared by a and b
                }
                assert_eq!(a.drain().len(), 200);
                assert_eq!(
                    seen.live(),
                    100,
                    "a's sole events are freed as it drops them"
                );
                // b alone from here (a is gone): sole slots again, mid-segment.
                drop(a);
                for _ in 0..100 {
                    ctx::send(seen.guard());
                }
                // a reader that comes back later never sees those.
                let mut c = ctx::subscribe::<Guard>();
                ctx::send(seen.guard());
                assert_eq!(b.drain().len(), 201);
                assert_eq!(c.drain().len(), 1);
                drop((b, c));
                assert_eq!(seen.live(), 0, "every payload freed");
            })
            .await;
        assert_eq!(payloads.dropped(), 301);
    });
}

/// A subscription ended by its scope, but not yet read to its end, shares its last segment
/// with a subscription made after the end. Events sent after the end are the newcomer's alone
/// (it is then the type's only reader, so it takes them from their slots): the ended one must
/// leave them where they are.
#[test]
fn an_ended_reader_leaves_the_slots_after_its_end_to_the_readers_after_it() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                // Keeps the log's current segment in use while `ended` leaves it.
                let keep = ctx::subscribe::<N>();
                let mut ended = ctx::scope("inner")
                    .run(async {
                        let sub = ctx::subscribe::<N>();
                        for i in 0..10 {
                            ctx::send(N(i));
                        }
                        sub
                    })
                    .await;
                let mut later = ctx::subscribe::<N>();
                drop(keep); // `later` is now the only attached reader
                for i in 10..20 {
                    ctx::send(N(i));
                }
                assert_eq!(values(&mut ended), (0..10).collect::<Vec<_>>());
                assert!(ended.next().await.is_none(), "then its end");
                assert_eq!(values(&mut later), (10..20).collect::<Vec<_>>());
            })
            .await;
    });
}
