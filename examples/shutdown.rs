//! Cancellation and shutdown: an application that stops cleanly on Ctrl-C.
//!
//! `cargo run --example shutdown`, then press Ctrl-C (it simulates one after 2 s, so that it
//! also ends when nobody is at the keyboard).

use std::time::Duration;

use scopebus::ctx;

// ANCHOR: all
#[tokio::main]
async fn main() {
    let ctrl_c = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("\nCtrl-C: shutting down"),
            _ = tokio::time::sleep(Duration::from_secs(2)) => println!("(simulating Ctrl-C)"),
        }
    };
    ctx::scope("server")
        // Raise the cancellation signal on Ctrl-C; abort what is still running 5 s later.
        .shutdown_on(ctrl_c, Duration::from_secs(5))
        .run(async {
            for id in 0..3 {
                ctx::spawn(worker(id));
            }
            // The body waits for the signal too; then the scope joins the workers.
            ctx::cancelled().await;
        })
        .await;
    println!("all workers stopped; bye");
}

async fn worker(id: u32) {
    let mut ticks = 0;
    loop {
        tokio::select! {
            _ = ctx::cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => ticks += 1,
        }
    }
    // Cleanup runs before the scope returns: flush, close connections, ...
    println!("worker {id} stopped cleanly after {ticks} ticks");
}
// ANCHOR_END: all
