//! Hard cancellation of a scope's tasks: the abort tree.
//!
//! Every scope has an [`AbortNode`], a child of its parent scope's node. Aborting a node aborts
//! its whole subtree: every task spawned in those scopes is woken and, at its next poll, its
//! future is dropped (the same point at which `tokio`'s own `abort` takes effect).
//!
//! Why not `CancellationToken`: a task would have to poll a `Notified` on every poll, and that
//! takes the token's mutex each time. Here a task takes the node's mutex twice in its whole life
//! (register on first poll, deregister on drop); every other poll is one atomic load.
//!
//! Invariants:
//! - `aborted` only goes from `false` to `true`.
//! - A watcher registers its waker under `inner`'s lock after checking `aborted` under that same
//!   lock, and `abort` sets `aborted` before taking the lock to drain the wakers, so a watcher
//!   either sees the flag or has its waker drained and woken: no lost wake-up.
//!
//! Lock order: a node's lock is never held while another node's lock is taken (children are
//! collected, the lock released, then each child aborted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Waker};

use crate::sync::{Slab, lock};

pub(crate) struct AbortNode {
    aborted: AtomicBool,
    inner: Mutex<NodeInner>,
    /// Our parent and our key among its children, to deregister on drop.
    /// Absent for a root, and for a child created after its parent was aborted.
    parent: Option<(Arc<AbortNode>, usize)>,
}

struct NodeInner {
    wakers: Slab<Waker>,
    children: Slab<Weak<AbortNode>>,
}

impl AbortNode {
    pub(crate) fn root() -> Arc<Self> {
        Arc::new(Self {
            aborted: AtomicBool::new(false),
            inner: Mutex::new(NodeInner {
                wakers: Slab::new(),
                children: Slab::new(),
            }),
            parent: None,
        })
    }

    /// A new node whose abort follows `parent`'s (already aborted if the parent is).
    pub(crate) fn child(parent: &Arc<Self>) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            // Checked under the parent's lock: `abort` drains children under it after setting
            // the flag, so a child is either drained or created aborted.
            let mut inner = lock(&parent.inner);
            let aborted = parent.aborted.load(Ordering::Acquire);
            let link = (!aborted).then(|| (parent.clone(), inner.children.insert(me.clone())));
            drop(inner);
            Self {
                aborted: AtomicBool::new(aborted),
                inner: Mutex::new(NodeInner {
                    wakers: Slab::new(),
                    children: Slab::new(),
                }),
                parent: link,
            }
        })
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Aborts this node and its subtree; idempotent.
    pub(crate) fn abort(&self) {
        if self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut inner = lock(&self.inner);
        let wakers: Vec<Waker> = inner.wakers.drain().collect();
        let children: Vec<Weak<AbortNode>> = inner.children.drain().collect();
        drop(inner);
        for waker in wakers {
            waker.wake();
        }
        for child in children {
            if let Some(child) = child.upgrade() {
                child.abort();
            }
        }
    }
}

impl Drop for AbortNode {
    fn drop(&mut self) {
        if let Some((parent, key)) = &self.parent {
            lock(&parent.inner).children.remove(*key);
        }
    }
}

/// One task's registration with its scope's [`AbortNode`], polled alongside the task.
///
/// Kept to four bytes, since every parked task carries one (with the rest of `TaskFuture`, it
/// decides whether a task fits `tokio`'s 256-byte task allocation or takes 384): the node is
/// passed in (the task reaches it through its frame), and the waker is registered once, on the
/// first poll that waits, and never compared again — a `tokio` task is always polled with a
/// waker for itself, and the watch is only used by `TaskFuture`, which is always a `tokio` task
/// of its own.
pub(crate) struct AbortWatch {
    /// The waker's key in the node's slab once registered, [`UNREGISTERED`] before.
    key: u32,
}

const UNREGISTERED: u32 = u32::MAX;

impl AbortWatch {
    pub(crate) fn new() -> Self {
        Self { key: UNREGISTERED }
    }

    /// `true` once `node` is aborted; otherwise makes sure the task is woken on abort.
    pub(crate) fn poll_aborted(&mut self, node: &AbortNode, cx: &mut Context<'_>) -> bool {
        if node.is_aborted() {
            return true;
        }
        if self.key != UNREGISTERED {
            return false;
        }
        let mut inner = lock(&node.inner);
        if node.is_aborted() {
            return true;
        }
        let key = inner.wakers.insert(cx.waker().clone());
        self.key = u32::try_from(key)
            .ok()
            .filter(|&key| key != UNREGISTERED)
            .expect("fewer than 2^32 - 1 tasks of one scope wait at once");
        false
    }

    /// Deregisters from `node` (the watch's owner calls this when it is dropped).
    pub(crate) fn release(&mut self, node: &AbortNode) {
        let key = std::mem::replace(&mut self.key, UNREGISTERED);
        if key != UNREGISTERED {
            lock(&node.inner).wakers.remove(key as usize);
        }
    }
}
