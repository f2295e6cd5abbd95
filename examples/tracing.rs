//! Observability with tracing: every scope is a span, every task runs inside its scope's span.
//!
//! `cargo run --example tracing`

use scopebus::ctx;

// ANCHOR: all
#[tokio::main]
async fn main() {
    // Any `tracing` subscriber works; here the plain formatter, with scopebus's debug events.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .init();

    ctx::scope("app")
        .run(async {
            tracing::info!("starting");
            ctx::scope("ingest")
                .isolated()
                .run(async {
                    ctx::spawn(async {
                        // Printed as `scope{name=app ..}:scope{name=ingest ..}: batch loaded`.
                        tracing::info!(rows = 42, "batch loaded");
                    });
                })
                .await;
        })
        .await;
}
// ANCHOR_END: all
