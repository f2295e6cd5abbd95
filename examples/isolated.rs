//! Isolated scopes: a component with a private bus, answering its parent through a handle.
//!
//! `cargo run --example isolated`

use futures::StreamExt;
use scopebus::ctx;

struct Query(u32);
struct Answer(u32);
/// Only ever sent inside the isolated scope.
#[allow(dead_code)]
struct CacheMiss(u32);

#[tokio::main]
async fn main() {
    ctx::scope("app")
        .run(async {
            let mut answers = ctx::subscribe::<Answer>();
            let app_misses = ctx::subscribe::<CacheMiss>();

            // ANCHOR: isolated
            let app = ctx::current();
            let queries = ctx::subscribe::<Query>(); // on the app's bus, before the component starts
            let component = ctx::spawn(ctx::scope("cache").isolated().run(async move {
                let misses = ctx::subscribe::<CacheMiss>(); // the private bus
                let mut queries = queries;
                while let Some(query) = queries.next().await {
                    println!("cache: miss for query {}", query.0);
                    ctx::send(CacheMiss(query.0)); // stays inside `cache`
                    app.send(Answer(query.0 * 2)); // the handle reaches the app's bus
                    if query.0 == 3 {
                        break;
                    }
                }
                // What reached the private bus: its own events only.
                misses.len()
            }));
            // ANCHOR_END: isolated

            for n in 1..=3 {
                ctx::send(Query(n));
            }
            for _ in 1..=3 {
                println!("app got answer {}", answers.next().await.unwrap().0);
            }
            let private = component.await.unwrap();
            println!("the cache saw {private} misses on its private bus");
            println!("the app saw {} misses", app_misses.len());
        })
        .await;
}
