//! Getting started: one scope, one subscriber task, one event.
//!
//! `cargo run --example getting_started`

// ANCHOR: all
use futures::StreamExt;
use scopebus::ctx;

#[derive(Debug)]
struct UserLoggedIn {
    user_id: u64,
}

#[tokio::main]
async fn main() {
    ctx::scope("app")
        .run(async {
            let mut logins = ctx::subscribe::<UserLoggedIn>();
            ctx::spawn(async move {
                while let Some(event) = logins.next().await {
                    println!("user {} logged in", event.user_id);
                }
                println!("the scope is done: the loop ends by itself");
            });
            ctx::send(UserLoggedIn { user_id: 7 });
        })
        .await;
}
// ANCHOR_END: all
