//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Runs the scenario built by `make` on a `current_thread` runtime, then on a 2-worker
/// multi-thread runtime. Each run is bounded by a generous timeout so a bug shows as a failure
/// with a message, never as a hung test.
pub fn both<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    current(make());
    multi(make());
}

pub fn current<Fut: Future<Output = ()> + Send + 'static>(fut: Fut) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bounded(fut, "current_thread"));
}

pub fn multi<Fut: Future<Output = ()> + Send + 'static>(fut: Fut) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bounded(fut, "multi_thread"));
}

async fn bounded<Fut: Future<Output = ()>>(fut: Fut, flavor: &str) {
    // A hang guard, not a timing assertion: nothing here takes more than a second.
    if tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .is_err()
    {
        panic!("scenario hung on the {flavor} runtime");
    }
}

/// Counts how many guards were created and how many dropped.
#[derive(Clone, Default)]
pub struct DropCounter {
    created: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

pub struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl DropCounter {
    pub fn guard(&self) -> Guard {
        self.created.fetch_add(1, Ordering::SeqCst);
        Guard(self.dropped.clone())
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    pub fn live(&self) -> usize {
        self.created.load(Ordering::SeqCst) - self.dropped()
    }
}

/// The message of a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("<non-string panic>")
    }
}
