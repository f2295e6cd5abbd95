//! Every scope is a `tracing` span, nested under its parent scope's span, and spawned tasks run
//! inside their scope's span (SPEC §3.6).

use std::io::Write;
use std::sync::{Arc, Mutex};

use scopebus::ctx;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn scopes_are_spans_and_tasks_are_instrumented() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .without_time()
        .with_target(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ctx::scope("app").run(async {
                tracing::info!("in body");
                ctx::scope("worker")
                    .isolated()
                    .run(async {
                        ctx::spawn(async {
                            tracing::info!("in task");
                        });
                    })
                    .await;
            }));
    });
    let output = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let body_line = output.lines().find(|l| l.contains("in body")).unwrap();
    assert!(
        body_line.contains("scope{name=app id=") && body_line.contains("isolated=false}"),
        "{output}"
    );
    let task_line = output.lines().find(|l| l.contains("in task")).unwrap();
    let app = task_line.find("scope{name=app").expect(&output);
    let worker = task_line.find("scope{name=worker").expect(&output);
    assert!(
        app < worker,
        "the worker span is nested in the app span: {task_line}"
    );
    assert!(task_line.contains("isolated=true"), "{task_line}");
}
