//! [`TopicTable`]: a bus's topics by event type, read without a lock.
//!
//! Every send looks its type up here, so the lookup must not take a lock that all senders of
//! the bus share (a read lock is still a write to a shared cache line). Topics are only ever
//! added, never removed (a bus keeps a type's topic for its life), which allows a table of
//! append-only chains: 64 buckets by `TypeId` hash, each a chain of nodes linked through
//! `OnceLock`s. A reader walks a chain with acquire loads only; a writer appends under
//! `insert`, the table's one mutex.
//!
//! Invariants:
//! - A node is linked (its `OnceLock` set) only after it is complete, and never unlinked, so a
//!   reader holding `&self` may keep a reference to a topic for as long as the table lives.
//! - A type appears at most once: inserts happen under `insert` after looking the type up again.
//! - An empty bucket (or no buckets yet) proves that its types have no topic: the
//!   no-subscriber fast path of a send is two acquire loads.
//!
//! Lock order: `insert` is taken by the bus before any topic lock, never while one is held.

use std::any::TypeId;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::sync::lock;
use crate::topic::AnyTopic;

const BUCKETS: usize = 64;

struct Node {
    key: TypeId,
    topic: Arc<dyn AnyTopic>,
    next: OnceLock<Box<Node>>,
}

type Buckets = [OnceLock<Box<Node>>; BUCKETS];

pub(crate) struct TopicTable {
    /// Allocated with the first topic: a bus that never gets one (a short-lived isolated
    /// scope) costs neither the allocation nor the walk over empty buckets when dropped.
    buckets: OnceLock<Box<Buckets>>,
    insert: Mutex<()>,
}

impl TopicTable {
    pub(crate) fn new() -> Self {
        Self {
            buckets: OnceLock::new(),
            insert: Mutex::new(()),
        }
    }

    /// The topic of `key`, if the type has one. Takes no lock.
    #[inline]
    pub(crate) fn get(&self, key: TypeId) -> Option<&Arc<dyn AnyTopic>> {
        let mut node = self.buckets.get()?[bucket(key)].get()?;
        loop {
            if node.key == key {
                return Some(&node.topic);
            }
            node = node.next.get()?;
        }
    }

    /// Serialises inserts (and whatever must not interleave with one: adding a tap, closing).
    pub(crate) fn writer(&self) -> MutexGuard<'_, ()> {
        lock(&self.insert)
    }

    /// Adds `topic` for `key`. The caller holds [`writer`](Self::writer) and has checked that
    /// `key` has no topic yet.
    pub(crate) fn insert(
        &self,
        _writer: &MutexGuard<'_, ()>,
        key: TypeId,
        topic: Arc<dyn AnyTopic>,
    ) {
        let node = Box::new(Node {
            key,
            topic,
            next: OnceLock::new(),
        });
        let buckets = self
            .buckets
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let mut slot = &buckets[bucket(key)];
        while let Some(existing) = slot.get() {
            slot = &existing.next;
        }
        if slot.set(node).is_err() {
            unreachable!("inserts are serialised by the writer lock");
        }
    }

    /// Every topic, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<dyn AnyTopic>> {
        let mut out = Vec::new();
        let Some(buckets) = self.buckets.get() else {
            return out;
        };
        for head in buckets.iter() {
            let mut next = head.get();
            while let Some(node) = next {
                out.push(node.topic.clone());
                next = node.next.get();
            }
        }
        out
    }
}

#[inline]
fn bucket(key: TypeId) -> usize {
    let mut hasher = TypeIdHasher::default();
    key.hash(&mut hasher);
    (hasher.finish() % BUCKETS as u64) as usize
}

/// A hasher for `TypeId` keys: a `TypeId` is already a high-quality hash, so use its bits.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `TypeId` today; fold the bytes in so any other use still hashes well.
        for &byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        self.0 ^= value as u64 ^ (value >> 64) as u64;
    }
}
