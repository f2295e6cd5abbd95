//! The shared log of one event type's default (unbounded, lossless) subscriptions.
//!
//! Why: with one queue per subscription, a send to N subscriptions takes N queue locks and N
//! reference-count increments on the sender's thread. Default subscriptions all want the same
//! thing — every event, in order, nothing dropped — so they share one log instead: a send
//! writes one slot, whatever N is, and each reader walks the log at its own pace. Typed
//! keep-latest subscriptions share the topic's latest cell (`latest.rs`) and park in the same
//! [`Waiters`]; bounded subscriptions and multi-type ones keep their own queues.
//!
//! Shape: a chain of fixed-size [`Segment`]s. The writer (the topic, under its lock) fills the
//! tail segment's slots in order and links a new segment when it is full. Each reader holds an
//! `Arc` to the segment it is in, so a segment lives while some reader still has to read it,
//! and memory grows only with what the slowest reader has not read.
//!
//! Invariants:
//! - Slots are written once, in index order, only under the topic lock; a slot (`slot.rs`)
//!   publishes the envelope with a release store, so a reader that sees it set sees the whole
//!   envelope (release/acquire), with no lock.
//! - A segment's `next` is set (under the topic lock) before any slot of the next segment is
//!   written.
//! - `Cursor::end_at` goes from `u64::MAX` to the writer's position once, under the topic lock,
//!   after `reason` is set: a reader that reaches `end_at` has read everything written before
//!   its end and nothing after. A reader compares its position with `end_at` only after it has
//!   seen its slot filled (or found it empty): the end happens before any later write (both
//!   under the topic lock), so an event sent after the end is always seen as such — checking
//!   first would let an end and a send slip in between, and deliver one event too many.
//! - A slot written while the log had exactly one attached reader is marked in its segment's
//!   `sole` bits, and that reader takes the slot's count instead of cloning it (`slot.rs`).
//!   Only it can ever read the slot: readers attached later start after it, and a reader
//!   ended earlier leaves every slot at or past its end untouched (the rule above).
//! - Parking never takes the topic lock (the sender holds it for the whole fan-out). A reader
//!   registers its waker in the topic's [`Waiters`], raises `parked`, then — after a `SeqCst`
//!   fence — looks at its slot again. A write sets the slot, fences (`SeqCst`) and then reads
//!   `parked`, taking the wakers if it is raised. Of the two store → fence → load sequences at
//!   least one sees the other's store (no lost wake-up), and a send with no parked reader costs
//!   one fence and one load. Only parked readers are woken.
//! - Segments are never dropped under a lock: the writer hands a retired tail back to be dropped
//!   after the lock (a payload's `Drop` may use the bus), and a chain is dropped iteratively.
//! - An event's payload is dropped when its segment is: once every reader has passed it (a
//!   reader lets go of a segment it has read to the end when it next finds nothing to read, or
//!   when it finishes the following segment, so that freeing never delays the event it is
//!   about to return) and the writer has moved on to a later segment (at most `SEGMENT - 1`
//!   sends later), or when the last reader goes away.
//!
//! Lock order: topic → waiters. A reader takes the waiters lock alone to park, and the topic
//! lock alone to detach, never while holding another lock of the crate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Poll, Waker};

use crate::event::{Envelope, Inner};
use crate::slot::{Claim, Look, Slot};
use crate::subscription::{EndReason, Endable};
use crate::topic::{AnyTopic, Topic};
pub(crate) use crate::waiters::Waiters;

/// Slots per segment: 62. A segment's allocation (`Arc` counts, 8-byte slots, the link) is then
/// 528 bytes, within glibc's per-thread cache (requests up to 1032 bytes): when slots were
/// 16 bytes, 64 of them made 1056 and every new segment took malloc's slow path, which
/// consolidates the fast bins the freed envelopes sit in (15 % of a 1 → 1 run's instructions).
/// 124 slots would also fit, but measured no faster, and a payload is freed up to a segment's
/// worth of sends after every reader has passed it.
pub(crate) const SEGMENT: usize = 62;

/// A generation no list reaches (it starts at 0 and counts writes that found a parked reader).
pub(crate) const NOT_PARKED: u64 = u64::MAX;

// Checked at compile time: a segment's allocation (two `Arc` counts and the segment) fits
// glibc's per-thread cache, whatever the event type (a slot holds a pointer).
const _: () = {
    let allocation = size_of::<Segment<u64>>() + 2 * size_of::<usize>();
    assert!(
        allocation <= 1032,
        "a log segment no longer fits the allocator's thread cache"
    );
    assert!(size_of::<Segment<u64>>() == size_of::<Segment<[u8; 4096]>>());
};

pub(crate) struct Segment<E> {
    slots: [Slot<Inner<E>>; SEGMENT],
    /// Bit `i` is set when slot `i` was written while the log had exactly one reader: that
    /// reader is the slot's only reader (readers attached later start after it), so it takes
    /// the slot's count instead of cloning it ([`Slot::read`]). Written by the writer before
    /// the slot's release store, read by the reader after its acquire load.
    sole: AtomicU64,
    next: OnceLock<Arc<Segment<E>>>,
}

impl<E> Segment<E> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            slots: std::array::from_fn(|_| Slot::new()),
            sole: AtomicU64::new(0),
            next: OnceLock::new(),
        })
    }
}

impl<E> Drop for Segment<E> {
    /// Drops the rest of the chain iteratively: a reader that never read would otherwise drop
    /// thousands of segments recursively.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(segment) = next {
            next = match Arc::try_unwrap(segment) {
                Ok(mut segment) => segment.next.take(),
                Err(_) => None, // someone else still holds it (and the rest)
            };
        }
    }
}

/// The shared state of one reader: what the topic needs to end it.
pub(crate) struct Cursor {
    pub(crate) id: u64,
    /// The subscription's name and whether it is linked (here rather than in the reader, which
    /// lives in the subscriber's task and is kept small).
    pub(crate) name: Option<Arc<str>>,
    pub(crate) linked: bool,
    /// The log position at which the reader ends (`u64::MAX`: not ended).
    end_at: AtomicU64,
    reason: OnceLock<EndReason>,
    topic: Weak<dyn AnyTopic>,
    /// Keep-latest readers only (`latest.rs`): the version of the type's latest cell the reader
    /// reads next. Written and read only under the topic lock (so `Relaxed`).
    pub(crate) read_to: AtomicU64,
}

impl Cursor {
    /// A reader's shared state; `topic` is the topic it reads.
    pub(crate) fn new(
        id: u64,
        name: Option<Arc<str>>,
        linked: bool,
        topic: Weak<dyn AnyTopic>,
    ) -> Self {
        Self {
            id,
            name,
            linked,
            end_at: AtomicU64::new(u64::MAX),
            reason: OnceLock::new(),
            topic,
            read_to: AtomicU64::new(0),
        }
    }

    /// Whether the reader has been ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.end_at.load(Ordering::Acquire) != u64::MAX
    }

    /// Why the reader was ended, once it was.
    pub(crate) fn reason(&self) -> Option<EndReason> {
        self.reason.get().copied()
    }

    /// Ends the reader at log position `at` (topic lock held). The first end wins.
    pub(crate) fn end(&self, at: u64, reason: EndReason) {
        if self.reason.set(reason).is_ok() {
            self.end_at.store(at, Ordering::Release);
        }
    }
}

impl Endable for Cursor {
    fn end_subscription(&self, reason: EndReason) {
        if let Some(topic) = self.topic.upgrade() {
            topic.end_reader(self.id, reason);
        }
    }
}

/// The writer's half, inside the topic (under its lock).
pub(crate) struct LogWriter<E> {
    /// The segment being filled; `None` while the log has no reader.
    tail: Option<Arc<Segment<E>>>,
    /// The slot of `tail` the next event goes to.
    at: usize,
    /// The log position of the next event.
    pub(crate) next: u64,
    pub(crate) readers: Vec<Arc<Cursor>>,
}

impl<E> LogWriter<E> {
    pub(crate) fn new() -> Self {
        Self {
            tail: None,
            at: 0,
            next: 0,
            readers: Vec::new(),
        }
    }

    /// Appends `envelope` for every reader; returns a retired segment to drop after the lock.
    /// The caller then wakes the parked readers ([`Waiters::after_write`]).
    pub(crate) fn write(&mut self, envelope: Envelope<E>) -> Option<Arc<Segment<E>>> {
        let tail = self.tail.as_ref().expect("a log with readers has a tail");
        let mut retired = None;
        if self.at == SEGMENT {
            let fresh = Segment::new();
            let _ = tail.next.set(fresh.clone());
            retired = self.tail.replace(fresh);
            self.at = 0;
        }
        let tail = self.tail.as_ref().expect("just set");
        if self.readers.len() == 1 {
            // One writer (under the topic lock): a plain read-modify-write is enough.
            let sole = tail.sole.load(Ordering::Relaxed) | 1 << self.at;
            tail.sole.store(sole, Ordering::Relaxed);
        }
        tail.slots[self.at].set(envelope.into_shared());
        self.at += 1;
        self.next += 1;
        retired
    }

    /// A new reader at the end of the log.
    pub(crate) fn attach(&mut self, cursor: Arc<Cursor>) -> (Arc<Segment<E>>, usize, u64) {
        let tail = self.tail.get_or_insert_with(|| {
            self.at = 0;
            Segment::new()
        });
        self.readers.push(cursor);
        (tail.clone(), self.at, self.next)
    }

    /// Detaches reader `id`; when it was the last, hands back the tail to drop after the lock.
    pub(crate) fn detach(&mut self, id: u64) -> (bool, Option<Arc<Segment<E>>>) {
        let Some(index) = self.readers.iter().position(|c| c.id == id) else {
            return (false, None);
        };
        self.readers.swap_remove(index);
        let tail = if self.readers.is_empty() {
            self.tail.take()
        } else {
            None
        };
        (true, tail)
    }

    /// Ends reader `id` at the current position; hands back the tail if it was the last.
    pub(crate) fn end_one(&mut self, id: u64, reason: EndReason) -> Option<Arc<Segment<E>>> {
        let index = self.readers.iter().position(|c| c.id == id)?;
        self.readers[index].end(self.next, reason);
        self.detach(id).1
    }

    /// Ends every reader; hands back the tail, for after the lock.
    pub(crate) fn end_all(&mut self, reason: EndReason) -> Option<Arc<Segment<E>>> {
        for cursor in self.readers.drain(..) {
            cursor.end(self.next, reason);
        }
        self.tail.take()
    }
}

/// The reading half of a default subscription.
pub(crate) struct LogReader<E: Send + Sync + 'static> {
    topic: Arc<Topic<E>>,
    cursor: Arc<Cursor>,
    segment: Arc<Segment<E>>,
    /// The segment just read to the end, kept until the reader next has nothing to read:
    /// dropping it may free a segment's worth of events (62 frees), which would otherwise
    /// delay the event that made the reader move on.
    passed: Option<Arc<Segment<E>>>,
    /// The log position to read next.
    pos: u64,
    /// Replayed (retained) events, read before the log; boxed, as most readers replay nothing.
    #[expect(
        clippy::box_collection,
        reason = "one word in every reader instead of four, for a buffer that is rarely used"
    )]
    local: Option<Box<VecDeque<Envelope<E>>>>,
    /// The waiters' generation this reader last parked in ([`NOT_PARKED`] before the first).
    registered: u64,
    /// The slot of `segment` to read next (at most `SEGMENT`).
    at: u32,
}

impl<E: Send + Sync + 'static> LogReader<E> {
    /// A reader with shared state `cursor`, starting where [`LogWriter::attach`] put it.
    pub(crate) fn new(
        topic: Arc<Topic<E>>,
        cursor: Arc<Cursor>,
        (segment, at, pos): (Arc<Segment<E>>, usize, u64),
    ) -> Self {
        Self {
            topic,
            cursor,
            segment,
            passed: None,
            pos,
            local: None,
            registered: NOT_PARKED,
            at: u32::try_from(at).expect("a slot index fits"),
        }
    }

    pub(crate) fn preload(&mut self, retained: impl Iterator<Item = Envelope<E>>) {
        let retained: VecDeque<_> = retained.collect();
        if !retained.is_empty() {
            self.local = Some(Box::new(retained));
        }
    }

    pub(crate) fn cursor(&self) -> &Arc<Cursor> {
        &self.cursor
    }

    /// The next event if one is there now: `Ready(Some)`, `Ready(None)` with the reason once
    /// ended and read to the end, or `Pending` (parking `waker` if given).
    #[inline]
    #[allow(
        unsafe_code,
        reason = "`Slot::read`, with the only-reader argument at the call"
    )]
    pub(crate) fn poll_take(
        &mut self,
        waker: Option<&Waker>,
    ) -> Poll<Result<Envelope<E>, EndReason>> {
        if let Some(local) = &mut self.local {
            match local.pop_front() {
                Some(envelope) => return Poll::Ready(Ok(envelope)),
                None => self.local = None,
            }
        }
        loop {
            if self.at as usize == SEGMENT {
                match self.segment.next.get() {
                    Some(next) => {
                        // The segment we leave is dropped later, when there is nothing to
                        // read (`park`), or here if we pass another one first; no lock is
                        // held either way.
                        let next = next.clone();
                        self.passed = Some(std::mem::replace(&mut self.segment, next));
                        self.at = 0;
                    }
                    None => match self.nothing_to_read(waker) {
                        Some(poll) => return poll,
                        None => continue,
                    },
                }
            }
            let (segment, at, pos) = (&self.segment, self.at as usize, self.pos);
            let end_at = &self.cursor.end_at;
            // Decided once the slot is seen filled, not before looking: an end happens before
            // any event written after it (both under the topic lock), so if this event was
            // sent after this reader's end, `end_at` shows it now, and the event is left alone.
            // Looking at `end_at` first would let an end and a send slip in between.
            let decide = || {
                if pos >= end_at.load(Ordering::Acquire) {
                    Claim::Leave
                } else if segment.sole.load(Ordering::Relaxed) & 1 << at != 0 {
                    Claim::Own
                } else {
                    Claim::Share
                }
            };
            // SAFETY: a slot marked sole was written while this reader was the log's only
            // attached one: readers attached later start after it (`LogWriter::attach`), and
            // readers ended earlier never take a slot at or past their end (`decide`). So
            // nobody else reads it, and this reader moves past it now.
            match unsafe { segment.slots[at].read(decide) } {
                Look::Value(envelope) => {
                    self.at += 1;
                    self.pos += 1;
                    return Poll::Ready(Ok(Envelope::from_shared(envelope)));
                }
                Look::Left => return Poll::Ready(Err(self.end_reason())),
                Look::Empty => match self.nothing_to_read(waker) {
                    Some(poll) => return poll,
                    None => continue,
                },
            }
        }
    }

    fn end_reason(&self) -> EndReason {
        *self.cursor.reason.get().expect("set before end_at")
    }

    /// Nothing to read at the reader's position: the end if it has reached it, else parks
    /// (`Pending`) — or `None` if something arrived meanwhile and it should look again.
    fn nothing_to_read(
        &mut self,
        waker: Option<&Waker>,
    ) -> Option<Poll<Result<Envelope<E>, EndReason>>> {
        if self.pos >= self.cursor.end_at.load(Ordering::Acquire) {
            return Some(Poll::Ready(Err(self.end_reason())));
        }
        if self.park(waker) {
            return None;
        }
        Some(Poll::Pending)
    }

    /// Parks with `waker`; `true` if something arrived meanwhile and the reader should look
    /// again (see the module invariants).
    fn park(&mut self, waker: Option<&Waker>) -> bool {
        // Nothing to read: the time to free what the reader has passed.
        drop(self.passed.take());
        let Some(waker) = waker else {
            return false;
        };
        self.topic
            .waiters()
            .register(self.cursor.id, waker, &mut self.registered);
        self.pos >= self.cursor.end_at.load(Ordering::Acquire)
            || match self.segment.slots.get(self.at as usize) {
                Some(slot) => slot.is_set(),
                None => self.segment.next.get().is_some(),
            }
    }

    /// Events waiting to be read now.
    pub(crate) fn len(&self) -> usize {
        let written = self.topic.log_position();
        let end = self.cursor.end_at.load(Ordering::Acquire).min(written);
        self.local.as_ref().map_or(0, |local| local.len()) + end.saturating_sub(self.pos) as usize
    }
}

impl<E: Send + Sync + 'static> Drop for LogReader<E> {
    fn drop(&mut self) {
        self.topic.remove(self.cursor.id);
    }
}
