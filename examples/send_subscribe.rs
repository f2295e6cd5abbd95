//! Sending and subscribing: fan-out counts, start position, envelopes, order.
//!
//! `cargo run --example send_subscribe`

use futures::StreamExt;
use scopebus::{Sent, ctx};

#[derive(Debug)]
struct PriceChanged {
    symbol: &'static str,
    cents: u64,
}

#[tokio::main]
async fn main() {
    ctx::scope("market")
        .run(async {
            // ANCHOR: count
            // Nobody listens yet: the event is dropped at once, nothing is allocated.
            let reached = ctx::send(PriceChanged {
                symbol: "ACME",
                cents: 100,
            });
            assert_eq!(reached, Sent::Delivered(0));

            let mut chart = ctx::subscribe::<PriceChanged>();
            let mut alerts = ctx::subscribe::<PriceChanged>();
            let reached = ctx::send(PriceChanged {
                symbol: "ACME",
                cents: 101,
            });
            assert_eq!(reached.delivered(), 2);
            println!("second price: {reached}"); // "delivered to 2 subscriptions"
            // ANCHOR_END: count

            // ANCHOR: envelope
            let first = chart.next().await.unwrap();
            let same = alerts.next().await.unwrap();
            // Both subscribers share one allocation; the envelope says where and when.
            assert!(scopebus::Envelope::ptr_eq(&first, &same));
            println!(
                "{} at {} cents: event #{} from scope {} sent at {:?}",
                first.symbol,
                first.cents,
                first.seq(),
                first.origin(),
                first.sent_at()
            );
            // ANCHOR_END: envelope

            // ANCHOR: order
            // A slow subscriber lags but loses nothing, and sees the send order.
            for cents in 102..112 {
                ctx::send(PriceChanged {
                    symbol: "ACME",
                    cents,
                });
            }
            println!("chart has {} events waiting", chart.len());
            let prices: Vec<u64> = (&mut chart).take(10).map(|e| e.cents).collect().await;
            println!("chart saw {prices:?}");
            // ANCHOR_END: order
        })
        .await;
}
