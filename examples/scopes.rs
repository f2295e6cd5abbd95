//! Scopes and the context stack: nesting, names, which bus a scope uses.
//!
//! `cargo run --example scopes`

use futures::StreamExt;
use scopebus::ctx;

#[derive(Debug)]
struct Note(&'static str);

#[tokio::main]
async fn main() {
    // ANCHOR: stack
    ctx::scope("app")
        .run(async {
            let mut notes = ctx::subscribe::<Note>();
            println!("current scope: {}", ctx::current().info());

            ctx::scope("request")
                .run(async {
                    // The nested scope is now current, and it shares the app's bus.
                    println!("current scope: {}", ctx::current().info());
                    ctx::send(Note("sent from the nested scope"));
                })
                .await;

            // Back in `app`: the nested scope has fully exited.
            println!("current scope: {}", ctx::current().info());
            let note = notes.next().await.unwrap();
            println!("app received {:?} from {}", note.0, note.origin());
        })
        .await;
    // ANCHOR_END: stack

    // ANCHOR: outside
    // Outside of any scope there is no bus: the `try_` forms say so.
    let err = ctx::try_send(Note("nowhere")).unwrap_err();
    println!("outside a scope: {err}");
    // ANCHOR_END: outside
}
