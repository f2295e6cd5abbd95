//! [`Tracker`]: counts what a scope must wait for before it exits — its tasks, and the holds of
//! nested scopes that have tasks (`scope.rs`) — and wakes the exit when the last one goes.
//!
//! Why not tokio-util's `TaskTracker`: that is an `Arc` of its own (one more allocation per
//! scope) whose `wait` goes through a `Notify`; each task also held a token with another
//! `Arc`. The tracker lives inside the scope's `Arc<Frame>`, which every task already holds,
//! and the scope's exit is its only waiter, so one counter and one `AtomicWaker` do.
//!
//! Invariants:
//! - `state` is `2 × count + closed`: [`add`](Tracker::add) counts one more before the task or
//!   hold exists, [`release`](Tracker::release) is called exactly once for each, after it is
//!   gone. Counting can go on after [`close`](Tracker::close) (the wait then waits for it too).
//! - No lost wake-up: the exit registers its waker, then reads `state`; a release that brings
//!   `state` to "closed, nothing counted" wakes the waker after its decrement, and so does a
//!   `close` that finds nothing counted. `AtomicWaker` orders a `register` before a concurrent
//!   `wake` or hands the wake to the next `register`, so the exit either sees the final state
//!   or is woken.
//!
//! No lock. Written against `crate::atomics` so that `tests/loom.rs` can model this file.

use std::future::poll_fn;
use std::task::Poll;

use crate::atomics::{AtomicUsize, AtomicWaker, Ordering};

const CLOSED: usize = 1;
const ONE: usize = 2;

pub(crate) struct Tracker {
    state: AtomicUsize,
    exit: AtomicWaker,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
            exit: AtomicWaker::new(),
        }
    }

    /// Counts one more task or hold; the caller calls [`release`](Self::release) once for it.
    #[inline]
    pub(crate) fn add(&self) {
        self.state.fetch_add(ONE, Ordering::Relaxed);
    }

    /// One counted task or hold is gone.
    #[inline]
    pub(crate) fn release(&self) {
        let before = self.state.fetch_sub(ONE, Ordering::AcqRel);
        debug_assert!(before >= ONE, "a tracker released more than it counted");
        if before == CLOSED + ONE {
            self.exit.wake();
        }
    }

    /// No more waiting than what is counted: [`wait`](Self::wait) can complete.
    pub(crate) fn close(&self) {
        if self.state.fetch_or(CLOSED, Ordering::AcqRel) == 0 {
            self.exit.wake();
        }
    }

    /// Completes once the tracker is closed and nothing is counted.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            self.exit.register(cx.waker());
            if self.state.load(Ordering::Acquire) == CLOSED {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(all(test, not(scopebus_loom)))]
mod tests {
    use super::Tracker;
    use futures::FutureExt;

    #[test]
    fn waits_for_close_and_for_everything_counted() {
        let tracker = Tracker::new();
        tracker.add();
        tracker.add();
        assert!(tracker.wait().now_or_never().is_none(), "not closed");
        tracker.close();
        assert!(tracker.wait().now_or_never().is_none(), "two counted");
        tracker.release();
        tracker.add(); // counted after close: waited for too
        tracker.release();
        assert!(tracker.wait().now_or_never().is_none(), "one counted");
        tracker.release();
        assert!(tracker.wait().now_or_never().is_some());
    }

    #[test]
    fn the_last_release_wakes_the_waiting_exit() {
        let tracker = std::sync::Arc::new(Tracker::new());
        tracker.add();
        tracker.close();
        let (done, woken) = std::sync::mpsc::channel();
        let waiter = {
            let tracker = tracker.clone();
            std::thread::spawn(move || {
                futures::executor::block_on(tracker.wait());
                done.send(()).unwrap();
            })
        };
        tracker.release();
        woken
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the exit was woken");
        waiter.join().unwrap();
    }
}
