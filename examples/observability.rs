//! Observability: multi-type streams, a tap on the whole bus, statistics and drop reports.
//!
//! `cargo run --example observability`

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use scopebus::{Overflow, ScopeStopped, TaskFailed, ctx};

#[derive(Debug)]
struct OrderPlaced(u32);
#[derive(Debug)]
struct OrderShipped(u32);
#[derive(Debug)]
struct CacheHit;

#[tokio::main]
async fn main() {
    ctx::scope("shop")
        .on_drop(|report| println!("drop report: {report:?}"))
        .run(async {
            // ANCHOR: many
            // One stream over two types, in the order they were sent.
            let mut orders = ctx::subscribe_many()
                .with::<OrderPlaced>()
                .with::<OrderShipped>()
                .subscribe();
            // ANCHOR_END: many
            // ANCHOR: tap
            // Everything on the bus, for a debug log that must never slow the shop down.
            let mut log = ctx::tap()
                .name("debug-log")
                .bounded(100, Overflow::DropOldest)
                .lossy()
                .subscribe();
            // ANCHOR_END: tap
            let mut slow = ctx::subscription::<OrderPlaced>()
                .name("slow-mailer")
                .bounded(1, Overflow::DropNewest)
                .subscribe();

            ctx::send(OrderPlaced(1));
            ctx::send(CacheHit);
            ctx::send(OrderPlaced(2)); // the mailer is full: a critical drop, reported
            ctx::send(OrderShipped(1));

            // ANCHOR: many_read
            for _ in 0..3 {
                let event = orders.next().await.unwrap();
                if let Some(placed) = event.downcast_ref::<OrderPlaced>() {
                    println!("#{} placed {}", event.seq(), placed.0);
                } else if let Some(shipped) = event.downcast_ref::<OrderShipped>() {
                    println!("#{} shipped {}", event.seq(), shipped.0);
                }
            }
            // ANCHOR_END: many_read
            for event in log.drain() {
                println!(
                    "log: #{} {} from {}",
                    event.seq(),
                    event.type_name(),
                    event.origin()
                );
            }
            println!(
                "mailer got order {} and missed {}",
                slow.try_next().unwrap().0,
                slow.dropped()
            );

            // ANCHOR: stats
            let stats = ctx::stats();
            println!(
                "bus: sent {} delivered {} dropped critical {} lossy {} undelivered {}",
                stats.sent,
                stats.delivered,
                stats.dropped_critical,
                stats.dropped_lossy,
                stats.undelivered
            );
            for t in &stats.types {
                println!(
                    "  {:<40} subs {} sent {} delivered {} dropped {}",
                    t.type_name, t.subscriptions, t.sent, t.delivered, t.dropped_critical
                );
            }
            // ANCHOR_END: stats
        })
        .await;

    // ANCHOR: system
    ctx::scope("supervisor")
        .run(async {
            // The library's own events are ordinary typed events.
            let mut failures = ctx::subscribe::<TaskFailed>();
            let mut stops = ctx::subscribe::<ScopeStopped>();
            let worker = ctx::scope("worker").run(async {
                ctx::spawn(async { panic!("disk full") });
            });
            // The worker fails: its panic comes out of its `run`.
            let _ = AssertUnwindSafe(worker).catch_unwind().await;
            let failure = failures.next().await.unwrap();
            let stop = stops.next().await.unwrap();
            println!(
                "task {} of {} failed: {:?}; scope {} stopped: {:?}",
                failure.task, failure.scope, failure.message, stop.scope, stop.outcome
            );
        })
        .await;
    // ANCHOR_END: system
}
