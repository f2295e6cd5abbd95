//! Pausing and starting a bus: hold events while the system wires itself up, then deliver them
//! all, in order, with nothing lost.
//!
//! `cargo run --example pause`

use futures::StreamExt;
use scopebus::{Sent, ctx};

#[derive(Debug)]
struct ConfigLoaded(&'static str);

#[derive(Debug)]
struct JobQueued(u32);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // ANCHOR: boot
    ctx::scope("service")
        .paused()
        .held_capacity(4)
        .run(async {
            // Early events: nobody subscribed yet, but nothing is lost.
            let sent = ctx::send(ConfigLoaded("prod.toml"));
            println!("config: {sent}");
            for id in 1..=3 {
                ctx::send(JobQueued(id));
            }
            // The buffer holds 4: one more plain send is dropped, counted and reported.
            println!("job 4: {}", ctx::send(JobQueued(4)));
            let stats = ctx::stats();
            println!("held {}, dropped {}", stats.held, stats.dropped_held);

            // Wire up the consumers, then let events flow.
            let mut config = ctx::subscribe::<ConfigLoaded>();
            let mut jobs = ctx::subscribe::<JobQueued>();
            // `send_wait` does not drop: it waits for `start()` to make room.
            let patient = ctx::spawn(ctx::send_wait(JobQueued(5)));
            tokio::task::yield_now().await;
            ctx::start();
            println!("job 5: {}", patient.await.unwrap().unwrap());
            println!("after start: {}", ctx::send(JobQueued(6)));

            println!("config: {}", config.next().await.unwrap().0);
            let ids: Vec<u32> = jobs.drain().iter().map(|job| job.0).collect();
            println!("jobs in order: {ids:?}");
        })
        .await;
    // ANCHOR_END: boot

    // ANCHOR: pause
    ctx::scope("maintenance")
        .run(async {
            let mut jobs = ctx::subscribe::<JobQueued>();
            ctx::pause(); // e.g. while a dependency restarts
            assert_eq!(ctx::send(JobQueued(1)), Sent::Held);
            assert!(jobs.is_empty());
            ctx::start(); // idempotent: a second call does nothing
            ctx::start();
            assert_eq!(jobs.drain().len(), 1);
            println!("maintenance: held 1, delivered 1");
        })
        .await;
    // ANCHOR_END: pause
}
