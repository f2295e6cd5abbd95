//! Spawning tasks: handles, abort, and what a panic does to the scope.
//!
//! `cargo run --example spawning`

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use scopebus::{TaskError, ctx};

#[tokio::main]
async fn main() {
    // ANCHOR: handles
    ctx::scope("jobs")
        .run(async {
            let sum = ctx::spawn(async { (1..=10).sum::<u32>() });
            println!("sum = {:?}", sum.await);

            let forever = ctx::spawn(std::future::pending::<()>());
            forever.abort();
            assert_eq!(forever.await, Err(TaskError::Cancelled));

            // Dropping a handle detaches nothing: the scope still waits for the task.
            drop(ctx::spawn(async {
                tokio::task::yield_now().await;
                println!("a task whose handle was dropped still runs to the end");
            }));
        })
        .await;
    println!("`jobs` returned after all its tasks finished");
    // ANCHOR_END: handles

    // ANCHOR: panic
    let outcome = AssertUnwindSafe(ctx::scope("fragile").run(async {
        struct Cleanup;
        impl Drop for Cleanup {
            fn drop(&mut self) {
                println!("sibling: aborted because the scope failed (its Drop code still runs)");
            }
        }
        ctx::spawn(async {
            let _cleanup = Cleanup;
            std::future::pending::<()>().await
        });
        ctx::spawn(async { panic!("a task failed") });
        std::future::pending::<()>().await // the body is cancelled too
    }))
    .catch_unwind()
    .await;
    let payload = outcome.unwrap_err();
    println!(
        "`run` resumed the panic: {:?}",
        payload.downcast_ref::<&str>()
    );
    // ANCHOR_END: panic
}
