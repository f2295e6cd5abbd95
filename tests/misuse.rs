//! Misuse from user code (issue 7): sending from `Drop` during a scope's exit, subscribing or
//! sending from the drop callback, re-entrant sends from payload drops, and huge numbers of
//! types and scopes. None of it may deadlock or panic inside the library; every scenario runs
//! on both runtimes under the hang guard of `common::both`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::both;
use futures::StreamExt;
use scopebus::{Overflow, Sent, ctx};

#[derive(Debug)]
struct Note(&'static str);

/// Sends a `Note` when dropped, with the plain and the `try_` form.
struct SendsOnDrop(&'static str);

impl Drop for SendsOnDrop {
    fn drop(&mut self) {
        // Inside a scope's context the plain form never panics: a closed bus answers
        // `Delivered(0)`. Outside any context, only the `try_` form is safe.
        if ctx::try_current().is_some() {
            let _ = ctx::send(Note(self.0));
        }
        let _ = ctx::try_send(Note(self.0));
    }
}

#[test]
fn sending_from_drop_while_a_scope_exits_neither_panics_nor_hangs() {
    both(|| async {
        let mut notes = ctx::scope("outer")
            .run(async {
                let notes = ctx::subscribe::<Note>();
                ctx::scope("inner")
                    .run(async {
                        let _body = SendsOnDrop("body");
                        // Guards moved into the tasks' futures: dropped with them, whether the
                        // task ran or was aborted before its first poll.
                        let guard = SendsOnDrop("task");
                        ctx::spawn(async move {
                            let _task = guard;
                            tokio::task::yield_now().await;
                        });
                        let guard = SendsOnDrop("parked");
                        ctx::spawn(async move {
                            let _parked = guard;
                            ctx::cancelled().await;
                        });
                        ctx::shutdown(std::time::Duration::ZERO);
                    })
                    .await;
                notes
            })
            .await;
        let mut seen: Vec<&str> = notes.drain().iter().map(|n| n.0).collect();
        seen.sort();
        seen.dedup();
        // Each was sent while the shared bus was open (the outer scope was still running).
        assert_eq!(seen, ["body", "parked", "task"]);
        assert!(notes.next().await.is_none());
    });
}

/// An event whose payload sends another event when it is dropped, by whoever drops it last
/// (a reader, or the bus freeing a log segment).
struct Chain(u32);

impl Drop for Chain {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = ctx::try_send(Chain(self.0 - 1));
        }
    }
}

#[test]
fn a_payload_whose_drop_sends_again_is_handled_outside_every_lock() {
    both(|| async {
        ctx::scope("chain")
            .run(async {
                let mut chain = ctx::subscribe::<Chain>();
                let mut lossy = ctx::subscription::<Chain>()
                    .bounded(1, Overflow::DropOldest)
                    .lossy()
                    .subscribe();
                ctx::send(Chain(50));
                let mut seen = 0;
                // Each dropped payload sends the next one, from inside a reader or a send.
                while let Some(link) = chain.next().await {
                    seen += 1;
                    // The lossy copy too, so that the reader's drop is the last one.
                    drop(lossy.drain());
                    if link.0 == 0 {
                        break;
                    }
                }
                assert_eq!(seen, 51);
            })
            .await;
    });
}

#[test]
fn the_drop_callback_may_subscribe_and_send_even_when_its_send_drops_again() {
    both(|| async {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        ctx::scope("callback")
            .on_drop(move |_report| {
                seen.fetch_add(1, Ordering::Relaxed);
                // Subscribing and sending from the callback: the callback runs outside every
                // lock. Its send finds the same full queue and drops again: a recursion the
                // bus must bound (reports from inside the callback are counted, not re-reported).
                let _sub = ctx::try_subscribe::<Note>();
                let _ = ctx::try_send(Note("from the callback"));
            })
            .run(async {
                let _full = ctx::subscription::<Note>()
                    .bounded(1, Overflow::DropNewest)
                    .subscribe();
                for _ in 0..3 {
                    ctx::send(Note("x"));
                }
                let stats = ctx::stats();
                let notes = stats
                    .types
                    .iter()
                    .find(|t| t.type_name.ends_with("Note"))
                    .unwrap();
                assert!(notes.dropped_critical >= 2, "{notes:?}");
            })
            .await;
        assert!(calls.load(Ordering::Relaxed) >= 2);
    });
}

#[test]
fn ping_pong_between_subscribers_on_one_thread_terminates() {
    both(|| async {
        #[derive(Debug)]
        struct Ping(u32);
        #[derive(Debug)]
        struct Pong(u32);
        ctx::scope("pingpong")
            .run(async {
                let mut pings = ctx::subscribe::<Ping>();
                let mut pongs = ctx::subscribe::<Pong>();
                let ponger = ctx::spawn(async move {
                    while let Some(ping) = pings.next().await {
                        // Sends from inside the reading task, same thread on current_thread.
                        if ctx::send(Pong(ping.0)) == Sent::Delivered(0) || ping.0 == 0 {
                            break;
                        }
                    }
                });
                ctx::send(Ping(1000));
                while let Some(pong) = pongs.next().await {
                    if pong.0 == 0 {
                        break;
                    }
                    ctx::send(Ping(pong.0 - 1));
                }
                ponger.await.unwrap();
            })
            .await;
    });
}

macro_rules! sixteen {
    ($m:ident, $hi:literal) => {
        $m!($hi, 0);
        $m!($hi, 1);
        $m!($hi, 2);
        $m!($hi, 3);
        $m!($hi, 4);
        $m!($hi, 5);
        $m!($hi, 6);
        $m!($hi, 7);
        $m!($hi, 8);
        $m!($hi, 9);
        $m!($hi, 10);
        $m!($hi, 11);
        $m!($hi, 12);
        $m!($hi, 13);
        $m!($hi, 14);
        $m!($hi, 15);
    };
}

macro_rules! all_256 {
    ($m:ident) => {
        sixteen!($m, 0);
        sixteen!($m, 1);
        sixteen!($m, 2);
        sixteen!($m, 3);
        sixteen!($m, 4);
        sixteen!($m, 5);
        sixteen!($m, 6);
        sixteen!($m, 7);
        sixteen!($m, 8);
        sixteen!($m, 9);
        sixteen!($m, 10);
        sixteen!($m, 11);
        sixteen!($m, 12);
        sixteen!($m, 13);
        sixteen!($m, 14);
        sixteen!($m, 15);
    };
}

#[test]
fn hundreds_of_types_and_thousands_of_scopes_work_as_a_few_do() {
    both(|| async {
        ctx::scope("many")
            .run(async {
                // 256 distinct event types ([u8; 0] ... [u8; 255]), each with a subscriber.
                let mut subs: Vec<Box<dyn FnMut() -> usize + Send>> = Vec::new();
                macro_rules! subscribe {
                    ($hi:literal, $lo:literal) => {{
                        let mut sub = ctx::subscribe::<[u8; $hi * 16 + $lo]>();
                        subs.push(Box::new(move || sub.drain().len()));
                    }};
                }
                all_256!(subscribe);
                macro_rules! send {
                    ($hi:literal, $lo:literal) => {
                        assert_eq!(ctx::send([7u8; $hi * 16 + $lo]), Sent::Delivered(1));
                    };
                }
                all_256!(send);
                assert!(subs.iter_mut().all(|drain| drain() == 1));

                // 2 000 scopes one after the other, and 500 alive at once, each subscribed.
                for _ in 0..2_000 {
                    ctx::scope("brief")
                        .run(async { ctx::send(Note("brief")) })
                        .await;
                }
                let (tx, rx) = tokio::sync::watch::channel(false);
                let mut alive = Vec::new();
                for _ in 0..500 {
                    let mut rx = rx.clone();
                    alive.push(ctx::spawn(ctx::scope("alive").run(async move {
                        let mut notes = ctx::subscribe::<Note>();
                        rx.changed().await.unwrap();
                        notes.try_next().is_ok()
                    })));
                }
                tokio::task::yield_now().await;
                let reached = ctx::send(Note("all")).delivered();
                tx.send(true).unwrap();
                let mut got = 0;
                for task in alive {
                    got += usize::from(task.await.unwrap());
                }
                assert_eq!(
                    got, reached,
                    "every live scope's subscription got the event"
                );
            })
            .await;
    });
}
