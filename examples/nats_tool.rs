//! An operator's tool for the NATS bridge: tail a subject pattern live, or print history,
//! as readable lines or JSON (like seed 004's `events list`).
//!
//! ```text
//! nats_tool [--server URL] tail <pattern> [--json] [--count N] [--for SECONDS]
//! nats_tool [--server URL] history <pattern> [--limit N] [--since 10m] [--json]
//! ```
//!
//! `cargo run --features nats --example nats_tool -- tail 'events.>'`
//! `cargo run --features nats --example nats_tool -- history 'events.market.*' --limit 50 --since 10m`
//!
//! The server defaults to `$NATS_URL`, else `nats://127.0.0.1:4222`. `--since` takes a number
//! followed by `s`, `m`, `h` or `d`.

use std::process::exit;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use scopebus::{Bridge, History, RawEvent, ctx};

struct Options {
    server: String,
    command: String,
    pattern: String,
    json: bool,
    limit: usize,
    since: Option<Duration>,
    count: Option<usize>,
    duration: Option<Duration>,
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}");
    eprintln!(
        "usage: nats_tool [--server URL] tail <pattern> [--json] [--count N] [--for SECONDS]"
    );
    eprintln!(
        "       nats_tool [--server URL] history <pattern> [--limit N] [--since 10m] [--json]"
    );
    exit(2)
}

/// `90s`, `10m`, `2h`, `1d`.
fn parse_age(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut options = Options {
        server: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        command: String::new(),
        pattern: String::new(),
        json: false,
        limit: 20,
        since: None,
        count: None,
        duration: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--server" => options.server = value("--server"),
            "--json" => options.json = true,
            "--limit" => {
                options.limit = value("--limit")
                    .parse()
                    .unwrap_or_else(|_| usage("--limit takes a number"))
            }
            "--since" => {
                let age = value("--since");
                options.since = Some(
                    parse_age(&age).unwrap_or_else(|| usage("--since takes 30s, 10m, 2h or 1d")),
                );
            }
            "--count" => {
                options.count = Some(
                    value("--count")
                        .parse()
                        .unwrap_or_else(|_| usage("--count takes a number")),
                )
            }
            "--for" => {
                let seconds: f64 = value("--for")
                    .parse()
                    .unwrap_or_else(|_| usage("--for takes seconds"));
                options.duration = Some(Duration::from_secs_f64(seconds.max(0.0)));
            }
            flag if flag.starts_with("--") => usage(&format!("unknown option {flag}")),
            _ => positional.push(arg),
        }
    }
    match positional.as_slice() {
        [command, pattern] if command == "tail" || command == "history" => {
            options.command = command.clone();
            options.pattern = pattern.clone();
        }
        _ => usage("expected a command (tail or history) and a subject pattern"),
    }
    options
}

// ANCHOR: print
/// One event, as a readable line or as one line of JSON.
fn print(event: &RawEvent, json: bool) {
    if !json {
        println!("{event}");
        return;
    }
    let nanos = event
        .sent_at
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64);
    let line = serde_json::json!({
        "subject": event.subject,
        "type": event.type_name,
        "version": event.version,
        "node": event.node,
        "scope": event.scope,
        "id": event.id,
        "sent_at_ns": nanos,
        "stream_seq": event.stream_seq,
        "payload": event.json().unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
        }),
    });
    println!("{line}");
}
// ANCHOR_END: print

#[tokio::main]
async fn main() {
    let options = options();
    let failed = ctx::scope("nats-tool")
        .run(async move {
            let node = format!("tool-{}", std::process::id());
            let mut bridge = Bridge::new(options.server.clone()).node(node);
            if options.command == "history" {
                bridge = bridge.history(History::new());
            }
            let bridge = match bridge.install().await {
                Ok(bridge) => bridge,
                Err(error) => return Some(error.to_string()),
            };
            // ANCHOR: commands
            if options.command == "tail" {
                let mut events = match bridge.watch(&options.pattern).await {
                    Ok(events) => events,
                    Err(error) => return Some(error.to_string()),
                };
                let stop = tokio::time::sleep(options.duration.unwrap_or(Duration::MAX));
                tokio::pin!(stop);
                let mut seen = 0;
                while options.count.is_none_or(|count| seen < count) {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(event) => print(&event, options.json),
                            None => break,
                        },
                        () = &mut stop => break,
                    }
                    seen += 1;
                }
            } else {
                let found = match options.since {
                    Some(age) => {
                        let since = SystemTime::now() - age;
                        bridge
                            .history_since(&options.pattern, since, options.limit)
                            .await
                    }
                    None => bridge.history(&options.pattern, options.limit).await,
                };
                match found {
                    Ok(events) => events.iter().for_each(|event| print(event, options.json)),
                    Err(error) => return Some(error.to_string()),
                }
            }
            // ANCHOR_END: commands
            None
        })
        .await;
    if let Some(error) = failed {
        eprintln!("nats_tool: {error}");
        exit(1);
    }
}
