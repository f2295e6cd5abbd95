//! Request and response (scatter-gather): ask several components, gather their typed answers.
//!
//! `cargo run --example request`

use std::time::Duration;

use scopebus::{RequestError, RequestOptions, ctx};

// ANCHOR: all
/// The request: any type, no trait to implement.
struct ValidateConfig {
    text: &'static str,
}

/// The answer each validator gives.
struct Verdict {
    ok: bool,
    note: &'static str,
}

#[tokio::main]
async fn main() {
    ctx::scope("controller")
        .run(async {
            // Responders: one line each. They answer until the scope's body ends.
            ctx::respond::<ValidateConfig>("syntax").answer(|req| async move {
                let ok = !req.text.is_empty();
                Verdict {
                    ok,
                    note: if ok { "parses" } else { "empty" },
                }
            });
            ctx::respond::<ValidateConfig>("limits").answer(|req| async move {
                Verdict {
                    ok: req.text.len() < 64,
                    note: "size checked",
                }
            });
            ctx::respond::<ValidateConfig>("remote-policy").answer(|_req| async {
                tokio::time::sleep(Duration::from_secs(5)).await; // too slow today
                Verdict {
                    ok: true,
                    note: "late",
                }
            });

            // All three are expected; two are enough to go on (graceful degradation).
            let options = RequestOptions::new()
                .expect(["syntax", "limits", "remote-policy"])
                .min_responses(2)
                .timeout(Duration::from_millis(500));
            let answers = ctx::request::<_, Verdict>(ValidateConfig { text: "port = 80" }, options)
                .await
                .expect("two validators answer in time");
            for answer in &answers {
                // Field access reaches through the envelope and the response to the `Verdict`.
                let verdict = if answer.ok { "ok" } else { "rejected" };
                println!("{:>13}: {verdict} ({})", answer.responder(), answer.note);
            }

            // Requiring all three runs into the timeout: partial answers, and who is missing.
            let strict = RequestOptions::new()
                .expect(["syntax", "limits", "remote-policy"])
                .timeout(Duration::from_millis(500));
            match ctx::request::<_, Verdict>(ValidateConfig { text: "" }, strict).await {
                Err(RequestError::TimedOut { partial, missing }) => {
                    println!(
                        "timed out with {} answers; missing {missing:?}",
                        partial.len()
                    )
                }
                Ok(answers) => println!("unexpected: {} answers in time", answers.len()),
                Err(error) => println!("unexpected: {error}"),
            }
            // Stop the slow responder's pending answer instead of waiting for it.
            ctx::shutdown(Duration::ZERO);
        })
        .await;
}
// ANCHOR_END: all
