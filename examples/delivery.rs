//! Delivery policies and backpressure: what each subscriber does when it falls behind.
//!
//! `cargo run --example delivery`

use futures::StreamExt;
use scopebus::{Overflow, ctx};

#[derive(Debug)]
struct Reading {
    sensor: u32,
    value: u32,
}

#[tokio::main]
async fn main() {
    // ANCHOR: policies
    ctx::scope("plant")
        // Called once per event lost by a critical subscriber, with no lock held.
        .on_drop(|report| {
            println!(
                "  ALERT: {} lost a {} (capacity {})",
                report.subscriber.as_deref().unwrap_or("?"),
                report.event_type,
                report.capacity
            )
        })
        .run(async {
            // Lossless and unbounded: the default.
            let mut archive = ctx::subscribe::<Reading>();
            // Critical but bounded: keeps the newest 3, every loss is an alert.
            let mut controller = ctx::subscription::<Reading>()
                .name("controller")
                .bounded(3, Overflow::DropOldest)
                .subscribe();
            // Observability: bounded and lossy, losses are counted but raise no alert.
            let mut dashboard = ctx::subscription::<Reading>()
                .name("dashboard")
                .bounded(2, Overflow::DropNewest)
                .lossy()
                .subscribe();
            // State: only the newest reading matters.
            let mut display = ctx::subscription::<Reading>().keep_latest().subscribe();

            for value in 0..6 {
                ctx::send(Reading { sensor: 1, value });
            }

            let values = |events: Vec<scopebus::Envelope<Reading>>| -> Vec<u32> {
                events.iter().map(|r| r.value).collect()
            };
            println!("archive    {:?}", values(archive.drain()));
            let first = controller.try_next().unwrap();
            println!(
                "controller {} after missing {}, then {:?}",
                first.value,
                controller.missed(),
                values(controller.drain())
            );
            println!(
                "dashboard  {:?} ({} lost)",
                values(dashboard.drain()),
                dashboard.dropped()
            );
            let latest = display.next().await.unwrap();
            println!(
                "display    sensor {} = {} ({} superseded)",
                latest.sensor,
                latest.value,
                display.missed()
            );
            let stats = ctx::stats();
            println!(
                "stats: sent {}, delivered {}, dropped critical {} / lossy {}, superseded {}",
                stats.sent,
                stats.delivered,
                stats.dropped_critical,
                stats.dropped_lossy,
                stats.superseded
            );
        })
        .await;
    // ANCHOR_END: policies

    // ANCHOR: replay
    ctx::scope("market")
        .run(async {
            ctx::retain::<Reading>(3); // a catch-up buffer of the last 3
            for value in 0..10 {
                ctx::send(Reading { sensor: 2, value });
            }
            let mut late = ctx::subscription::<Reading>().replay().subscribe();
            ctx::send(Reading {
                sensor: 2,
                value: 10,
            });
            let seen: Vec<u32> = late.drain().iter().map(|r| r.value).collect();
            println!("late joiner caught up with {seen:?}");
        })
        .await;
    // ANCHOR_END: replay

    // ANCHOR: backpressure
    ctx::scope("pipeline")
        .run(async {
            let mut writer = ctx::subscription::<Reading>()
                .bounded(8, Overflow::Wait)
                .subscribe();
            ctx::spawn(async move {
                let mut written = 0;
                while writer.next().await.is_some() {
                    tokio::task::yield_now().await; // a slow disk
                    written += 1;
                }
                // The stream ends when the scope's body is done; the scope waits for this task.
                println!(
                    "writer stored {written} readings, lost {}",
                    writer.dropped()
                );
            });
            for value in 0..1000 {
                // Waits while the writer holds 8 unread readings: bounded memory, no loss.
                ctx::send_wait(Reading { sensor: 3, value }).await.unwrap();
            }
        })
        .await;
    // ANCHOR_END: backpressure
}
