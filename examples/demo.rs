//! The demo to run first: a small shop whose components talk through typed events.
//!
//! - `shop` (root scope, owns the main bus) places orders and waits until each is settled;
//! - `audit` (nested scope, same bus) logs every order and settlement;
//! - `checkout` (nested scope, same bus) turns each order into a payment request;
//! - `payments` (isolated scope, its own bus) scores the risk of each payment on its private
//!   bus, then answers on the shop's bus through a handle to the shop scope.
//!
//! Run it with `cargo run --example demo`. It prints what happens and ends by itself: when the
//! shop's body returns, its subscriptions end, every consumer loop finishes, and every scope is
//! joined.

use futures::StreamExt;
use scopebus::{ScopeHandle, Subscription, ctx};

#[derive(Debug)]
struct OrderPlaced {
    order: u32,
    amount_cents: u64,
}

#[derive(Debug)]
struct PaymentRequested {
    order: u32,
    amount_cents: u64,
}

/// Internal to `payments`: never seen on the shop's bus.
#[derive(Debug)]
struct RiskScored {
    order: u32,
    risky: bool,
}

#[derive(Debug)]
struct PaymentSettled {
    order: u32,
    accepted: bool,
}

#[tokio::main]
async fn main() {
    ctx::scope("shop")
        .run(async {
            // Subscribe before anything is sent: a subscription sees what is sent after it.
            let mut settled = ctx::subscribe::<PaymentSettled>();

            // Each component gets its subscriptions *before* it is spawned: a task may start
            // later, and a subscription made inside it would miss what is sent meanwhile.
            ctx::spawn(audit(ctx::subscribe(), ctx::subscribe()));
            ctx::spawn(checkout(ctx::subscribe()));
            ctx::spawn(payments(ctx::current(), ctx::subscribe()));

            let orders = [(1, 1_999), (2, 250_000), (3, 4_500)];
            for (order, amount_cents) in orders {
                let reached = ctx::send(OrderPlaced {
                    order,
                    amount_cents,
                });
                println!("[shop]     order {order} placed ({reached} subscribers)");
            }

            // Wait until every order is settled, then return: that ends the application.
            for _ in orders {
                let event = settled.next().await.expect("the shop's bus is open");
                let verdict = if event.accepted {
                    "accepted"
                } else {
                    "declined"
                };
                println!("[shop]     order {} {verdict}", event.order);
            }
            println!("[shop]     all orders settled, closing");
        })
        .await;
    println!("[main]     every scope has exited; nothing is left running");
}

/// Logs what happens on the shop's bus.
async fn audit(
    mut orders: Subscription<OrderPlaced>,
    mut settlements: Subscription<PaymentSettled>,
) {
    ctx::scope("audit")
        .run(async {
            loop {
                tokio::select! {
                    Some(order) = orders.next() => {
                        println!("[audit]    #{} {:?} from {}", order.seq(), *order, order.origin());
                    }
                    Some(done) = settlements.next() => {
                        println!("[audit]    #{} {:?} from {}", done.seq(), *done, done.origin());
                    }
                    else => break, // both streams ended: the bus closed
                }
            }
        })
        .await;
}

/// Turns orders into payment requests.
async fn checkout(mut orders: Subscription<OrderPlaced>) {
    ctx::scope("checkout")
        .run(async {
            while let Some(order) = orders.next().await {
                ctx::send(PaymentRequested {
                    order: order.order,
                    amount_cents: order.amount_cents,
                });
            }
        })
        .await;
}

/// An isolated component: its own bus for internal events, a handle to answer the shop.
async fn payments(shop: ScopeHandle, mut requests: Subscription<PaymentRequested>) {
    ctx::scope("payments")
        .isolated()
        .run(async move {
            // Internal pipeline on the private bus.
            let mut scores = ctx::subscribe::<RiskScored>();
            let answer = shop.clone();
            ctx::spawn(async move {
                while let Some(score) = scores.next().await {
                    answer.send(PaymentSettled {
                        order: score.order,
                        accepted: !score.risky,
                    });
                }
            });
            // Requests come from the shop's bus; the loop ends when that bus closes.
            while let Some(request) = requests.next().await {
                let risky = request.amount_cents > 100_000;
                println!("[payments] scoring order {} (private bus)", request.order);
                ctx::send(RiskScored {
                    order: request.order,
                    risky,
                });
            }
        })
        .await;
}
