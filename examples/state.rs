//! Scoped state: configuration and services attached to a scope, read anywhere inside it.
//!
//! `cargo run --example state`

use scopebus::ctx;

// ANCHOR: all
struct Config {
    region: &'static str,
    retries: u32,
}

/// A service shared by everything in the scope (immutable handle; use interior mutability
/// inside it if it needs any).
struct Greeter {
    greeting: &'static str,
}

#[tokio::main]
async fn main() {
    ctx::scope("app")
        .with_state(Config {
            region: "eu",
            retries: 3,
        })
        .with_state(Greeter { greeting: "hello" })
        .run(async {
            let config = ctx::state::<Config>();
            println!("app: region {}, {} retries", config.region, config.retries);

            // A nested scope overrides one value for its subtree only.
            ctx::scope("batch-job")
                .with_state(Config {
                    region: "eu",
                    retries: 0,
                })
                .run(async {
                    // Tasks see their scope's state.
                    let task = ctx::spawn(async {
                        let greeter = ctx::state::<Greeter>(); // inherited
                        format!(
                            "{} from a task, {} retries",
                            greeter.greeting,
                            ctx::state::<Config>().retries
                        )
                    });
                    println!("batch-job: {}", task.await.unwrap());
                })
                .await;

            println!("app again: {} retries", ctx::state::<Config>().retries);
            // Absent state is a clear error, not a default.
            match ctx::try_state::<u64>() {
                Ok(_) => unreachable!(),
                Err(error) => println!("u64: {error}"),
            }
        })
        .await;
}
// ANCHOR_END: all
