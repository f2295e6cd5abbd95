//! Hard cancellation of a scope's tasks: the abort tree.
//!
//! Every scope has an [`AbortNode`], a child of its parent scope's node. Aborting a node aborts
//! its whole subtree: every task spawned in those scopes is woken and, at its next poll, its
//! future is dropped (the same point at which `tokio`'s own `abort` takes effect).
//!
//! Why not `CancellationToken`: a task would have to poll a `Notified` on every poll, and that
//! takes the token's mutex each time. Here a task takes the node's flag lock twice in its whole
//! life (register on first poll, deregister on drop); every other poll is one atomic load.
//!
//! A node is its [`AbortFlag`] (the flag and the parked tasks' wakers, `abort_flag.rs`, modelled
//! with loom) and its children.
//!
//! Invariants:
//! - The flag only goes from `false` to `true` (see `abort_flag.rs` for the no-lost-wake-up
//!   argument of the wakers).
//! - A child is linked under its parent's `children` lock after reading the parent's flag under
//!   that same lock, and `abort` raises the flag before taking that lock to drain the children,
//!   so a child is either drained and aborted or created aborted.
//!
//! Lock order: a node's locks are never held while another node's lock is taken (children are
//! collected, the lock released, then each child aborted); a node's flag lock and its children
//! lock are never held together.

use std::sync::{Arc, Mutex, Weak};

pub(crate) use crate::abort_flag::{AbortFlag, AbortWatch};
use crate::sync::{Slab, lock};

pub(crate) struct AbortNode {
    flag: AbortFlag,
    children: Mutex<Slab<Weak<AbortNode>>>,
    /// Our parent and our key among its children, to deregister on drop.
    /// Absent for a root, and for a child created after its parent was aborted.
    parent: Option<(Arc<AbortNode>, usize)>,
}

impl AbortNode {
    pub(crate) fn root() -> Arc<Self> {
        Arc::new(Self {
            flag: AbortFlag::new(false),
            children: Mutex::new(Slab::new()),
            parent: None,
        })
    }

    /// A new node whose abort follows `parent`'s (already aborted if the parent is).
    pub(crate) fn child(parent: &Arc<Self>) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            // Checked under the parent's lock: `abort` drains children under it after raising
            // the flag, so a child is either drained or created aborted.
            let mut children = lock(&parent.children);
            let aborted = parent.flag.is_aborted();
            let link = (!aborted).then(|| (parent.clone(), children.insert(me.clone())));
            drop(children);
            Self {
                flag: AbortFlag::new(aborted),
                children: Mutex::new(Slab::new()),
                parent: link,
            }
        })
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.flag.is_aborted()
    }

    /// The flag a task watches (see [`AbortWatch`]).
    pub(crate) fn flag(&self) -> &AbortFlag {
        &self.flag
    }

    /// Aborts this node and its subtree; idempotent.
    pub(crate) fn abort(&self) {
        if !self.flag.raise() {
            return;
        }
        let children: Vec<Weak<AbortNode>> = lock(&self.children).drain().collect();
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
            lock(&parent.children).remove(*key);
        }
    }
}
