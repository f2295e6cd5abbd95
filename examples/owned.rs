//! Owned events and demand: a producer that owns its event type, works only while someone
//! listens, gives late subscribers a catch-up, and takes linked consumers down when it crashes.
//!
//! `cargo run --example owned`

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use scopebus::{DemandChange, RegisterOptions, ctx};

// ANCHOR: types
/// A camera frame: only the camera may send it.
struct Frame {
    n: u32,
}

/// A sensor reading, for the link-vs-monitor part.
struct Reading(u32);
// ANCHOR_END: types

#[tokio::main(flavor = "current_thread")]
async fn main() {
    ctx::scope("studio")
        .run(async {
            // ANCHOR: register
            // `Frame` is now owned on this bus; new subscribers first get the last 2 frames.
            let camera = ctx::register::<Frame>(RegisterOptions::new().retain(2)).unwrap();
            let refused = ctx::try_send(Frame { n: 0 }).unwrap_err();
            println!("plain send: {:?}", refused.kind());
            // ANCHOR_END: register

            // ANCHOR: demand
            let mut demand = camera.demand();
            let lens = camera.clone(); // a clone delegates: it sends as the registration
            let streamer = ctx::spawn(async move {
                let mut n = 0;
                while let Some(change) = demand.next().await {
                    println!("camera: {change:?}");
                    if change == DemandChange::Started {
                        for _ in 0..3 {
                            n += 1;
                            lens.send(Frame { n }).unwrap();
                        }
                    }
                }
                println!("camera: registration ended after {n} frames");
            });
            // ANCHOR_END: demand

            // ANCHOR: watch
            let mut viewer = ctx::subscribe::<Frame>(); // demand 0 -> 1: Started
            for _ in 0..3 {
                println!("viewer: frame {}", viewer.next().await.unwrap().n);
            }
            drop(viewer); // demand 1 -> 0: Stopped
            tokio::task::yield_now().await;

            let mut late = ctx::subscribe::<Frame>(); // catch-up: frames 2 and 3 first
            for _ in 0..5 {
                println!("late viewer: frame {}", late.next().await.unwrap().n);
            }
            camera.unregister(); // ends the registration for every clone
            assert!(late.next().await.is_none());
            println!("late viewer: ended, {}", late.end_reason().unwrap());
            streamer.await.unwrap();
            // ANCHOR_END: watch

            // ANCHOR: link
            let mut monitored = ctx::subscribe::<Reading>();
            let mut linked = ctx::subscription::<Reading>().linked().subscribe();
            let linked_task = ctx::spawn(async move {
                while let Some(reading) = linked.next().await {
                    println!("linked: reading {}", reading.0);
                }
                println!("linked: never printed, the task is cancelled instead");
            });
            let sensor_scope = AssertUnwindSafe(ctx::scope("sensor").run(async {
                let sensor = ctx::register::<Reading>(RegisterOptions::new()).unwrap();
                sensor.send(Reading(7)).unwrap();
                panic!("sensor hardware fault");
            }))
            .catch_unwind()
            .await;
            println!("sensor scope failed: {}", sensor_scope.is_err());
            while let Some(reading) = monitored.next().await {
                println!("monitor: reading {}", reading.0);
            }
            println!("monitor: ended, {}", monitored.end_reason().unwrap());
            println!("linked task: {:?}", linked_task.await);
            // ANCHOR_END: link
        })
        .await;
}
