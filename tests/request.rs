//! Scatter-gather (SPEC §5): requests gather typed answers matched by request id, from named
//! responders, with a timeout, an expected list and a minimum. Deadlines on a paused clock.

mod common;

use std::time::Duration;

use common::both;
use scopebus::{RequestError, RequestOptions, ctx};

#[derive(Debug)]
struct Check(u32);

fn names(responses: &scopebus::Responses<u32>) -> Vec<String> {
    let mut names: Vec<String> = responses.iter().map(|r| r.responder().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn all_expected_responders_answer() {
    ctx::scope("app")
        .run(async {
            ctx::respond::<Check>("double").answer(|q| async move { q.0 * 2 });
            ctx::respond::<Check>("square").answer(|q| async move { q.0 * q.0 });
            let start = tokio::time::Instant::now();
            let answers = ctx::request::<_, u32>(
                Check(3),
                RequestOptions::new().expect(["double", "square"]),
            )
            .await
            .unwrap();
            assert_eq!(names(&answers), ["double", "square"]);
            let mut values: Vec<u32> = answers.iter().map(|a| **a.event()).collect();
            values.sort();
            assert_eq!(values, [6, 9]);
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "no wait for the timeout"
            );
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn partial_results_and_missing_responders_on_timeout() {
    ctx::scope("app")
        .run(async {
            ctx::respond::<Check>("fast").answer(|_| async { 1u32 });
            ctx::respond::<Check>("slow").answer(|_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                2u32
            });
            let start = tokio::time::Instant::now();
            let err = ctx::request::<_, u32>(
                Check(0),
                RequestOptions::new()
                    .expect(["fast", "slow", "absent"])
                    .timeout(Duration::from_secs(5)),
            )
            .await
            .unwrap_err();
            let RequestError::TimedOut { partial, missing } = err else {
                panic!("expected a timeout, got {err:?}");
            };
            assert_eq!(names(&partial), ["fast"]);
            let missing: Vec<&str> = missing.iter().map(|m| &**m).collect();
            assert_eq!(missing, ["slow", "absent"]);
            let waited = start.elapsed();
            assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6));
            ctx::shutdown(Duration::ZERO); // stop the slow responder
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_minimum_completes_early_and_unexpected_answers_are_kept() {
    ctx::scope("app")
        .run(async {
            for name in ["a", "b", "stranger"] {
                ctx::respond::<Check>(name).answer(|_| async { 0u32 });
            }
            let answers = ctx::request::<_, u32>(
                Check(0),
                RequestOptions::new()
                    .expect(["a", "b", "c"])
                    .min_responses(2),
            )
            .await
            .unwrap();
            let got = names(&answers);
            assert!(got.contains(&"a".to_owned()) && got.contains(&"b".to_owned()));
            // With an empty expected list: every answer until the timeout.
            let all = ctx::request::<_, u32>(
                Check(0),
                RequestOptions::new().timeout(Duration::from_secs(1)),
            )
            .await
            .unwrap();
            assert_eq!(names(&all), ["a", "b", "stranger"]);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_responder_answering_twice_counts_once() {
    ctx::scope("app")
        .run(async {
            let mut requests = ctx::subscribe::<scopebus::Request<Check>>();
            let responder = ctx::spawn(async move {
                use futures::StreamExt;
                let request = requests.next().await.unwrap();
                request.reply("echo", 1u32);
                request.reply("echo", 2u32); // ignored: first wins
                request.reply("other", 3u32);
            });
            let answers =
                ctx::request::<_, u32>(Check(0), RequestOptions::new().expect(["echo", "other"]))
                    .await
                    .unwrap();
            responder.await.unwrap();
            assert_eq!(answers.len(), 2);
            let echo = answers.iter().find(|a| a.responder() == "echo").unwrap();
            assert_eq!(**echo.event(), 1);
        })
        .await;
}

#[test]
fn ten_concurrent_requests_each_get_exactly_their_own_answers() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                for name in ["x", "y"] {
                    ctx::respond::<Check>(name).answer(|q| async move { q.0 });
                }
                let requests: Vec<_> = (0..10)
                    .map(|i| {
                        ctx::spawn(ctx::request::<_, u32>(
                            Check(i),
                            RequestOptions::new().expect(["x", "y"]),
                        ))
                    })
                    .collect();
                for (i, request) in requests.into_iter().enumerate() {
                    let answers = request.await.unwrap().unwrap();
                    assert_eq!(answers.len(), 2);
                    assert!(
                        answers.iter().all(|a| **a.event() == i as u32),
                        "only its own"
                    );
                    assert_eq!(answers[0].request(), answers[1].request());
                }
            })
            .await;
    });
}

#[test]
fn invalid_options_are_refused_before_sending() {
    both(|| async {
        ctx::scope("app")
            .run(async {
                let mut sent = ctx::subscribe::<scopebus::Request<Check>>();
                for options in [
                    RequestOptions::new().expect(["a"]).min_responses(2),
                    RequestOptions::new().expect(["a", "a"]),
                    RequestOptions::new().expect(["a"]).min_responses(0),
                    RequestOptions::new().min_responses(1),
                ] {
                    let err = ctx::request::<_, u32>(Check(0), options).await.unwrap_err();
                    assert!(matches!(err, RequestError::Invalid(_)), "{err:?}");
                }
                assert!(sent.try_next().is_err(), "nothing was sent");
            })
            .await;
        let err = ctx::request::<_, u32>(Check(0), RequestOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            RequestError::NotSent(scopebus::SendErrorKind::NoScope)
        ));
    });
}
