//! The shared "latest" cell of one event type's keep-latest subscriptions.
//!
//! Why: a keep-latest subscription wants only the newest event it has not read. With one
//! capacity-1 queue per subscription, every send locked each queue, evicted its pending event
//! and marked a gap — work proportional to the number of subscriptions on every send, for
//! events that are mostly never read. Typed keep-latest subscriptions share one cell instead: a
//! send replaces the cell's envelope and bumps its version, whatever their number, and each
//! reader remembers the version it reads next. What a reader skipped is the difference of two
//! versions, so superseded events are counted without visiting the readers.
//! (Multi-type keep-latest subscriptions keep their own queues: their items mix types.)
//!
//! The cell lives inside the topic's state and is read under the topic lock: a read is one
//! short critical section (an `Arc` clone), and a reader that parks registers its waker while
//! it holds the lock, so a send — which holds the same lock — cannot slip between its look and
//! its registration.
//!
//! Invariants (all under the topic lock):
//! - `current` is the newest envelope sent while the cell had readers, `version` its number
//!   (the first is 1); with no reader attached, `current` is `None`.
//! - A reader's `read_to` ([`Cursor::read_to`]) is the version it reads next: it has an unread
//!   event exactly when `read_to <= version`, and has lost `version - read_to` events before it.
//! - `unread` counts the attached readers that have an unread event. A send adds it to the
//!   type's superseded count (each of them loses its pending event) and then sets it to the
//!   number of readers, so the counter is exact at every instant.
//! - A reader that is ended by its scope, its producer or the bus keeps the event it had not
//!   read (in `kept`), yields it, then ends: nothing sent before its end is lost to it and
//!   nothing sent after reaches it.
//! - No envelope is dropped under the lock: replaced and forgotten envelopes are handed back to
//!   the caller, which drops them after releasing it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

use crate::event::Envelope;
use crate::log::{Cursor, NOT_PARKED};
use crate::subscription::EndReason;
use crate::topic::{AnyTopic, Topic};

/// The writer's half, inside the topic's state.
pub(crate) struct LatestCell<E> {
    current: Option<Envelope<E>>,
    version: u64,
    unread: usize,
    pub(crate) readers: Vec<Arc<Cursor>>,
    /// Ended readers' unread events: `(reader id, events lost before it, the event)`.
    kept: Vec<(u64, u64, Envelope<E>)>,
}

/// One step of a read.
pub(crate) enum Read<E> {
    /// The next event, with how many were lost just before it.
    Event(Envelope<E>, u64),
    /// Nothing unread now.
    Empty,
    /// Ended and read to the end.
    Ended(EndReason),
}

impl<E> LatestCell<E> {
    pub(crate) fn new() -> Self {
        Self {
            current: None,
            version: 0,
            unread: 0,
            readers: Vec::new(),
            kept: Vec::new(),
        }
    }

    /// Makes `envelope` the newest for every reader. Returns how many pending events it
    /// superseded and the envelope it replaced (to drop after the lock).
    pub(crate) fn write(&mut self, envelope: Envelope<E>) -> (u64, Option<Envelope<E>>) {
        let superseded = self.unread as u64;
        self.unread = self.readers.len();
        self.version += 1;
        (superseded, self.current.replace(envelope))
    }

    /// Attaches a new reader. With `replay`, the newest retained event (if any) is its first.
    /// If the cell holds an event, that is the newest retained one (every send while the cell
    /// has readers wrote both). If it holds none — no reader yet, or nothing sent since its
    /// readers attached — it takes the newest retained event as a new version, which the
    /// readers already attached step over (it was sent before they subscribed).
    pub(crate) fn attach(&mut self, cursor: Arc<Cursor>, replay: Option<&Envelope<E>>)
    where
        E: Send + Sync + 'static,
    {
        debug_assert!(!self.readers.is_empty() || (self.current.is_none() && self.unread == 0));
        if let Some(newest) = replay
            && self.current.is_none()
        {
            self.current = Some(newest.clone());
            self.version += 1;
            for reader in &self.readers {
                // None of them had anything unread (the cell was empty).
                reader.read_to.store(self.version + 1, Ordering::Relaxed);
            }
        }
        let from = if replay.is_some() && self.current.is_some() {
            self.unread += 1;
            self.version
        } else {
            self.version + 1
        };
        cursor.read_to.store(from, Ordering::Relaxed);
        self.readers.push(cursor);
    }

    /// Whether the attached reader `cursor` has an unread event.
    fn has_unread(&self, cursor: &Cursor) -> bool {
        cursor.read_to.load(Ordering::Relaxed) <= self.version && self.current.is_some()
    }

    /// The next event for reader `cursor`, if there is one.
    pub(crate) fn read(&mut self, cursor: &Cursor) -> Read<E> {
        if cursor.is_ended() {
            return match self.kept.iter().position(|(id, ..)| *id == cursor.id) {
                Some(index) => {
                    let (_, missed, envelope) = self.kept.swap_remove(index);
                    Read::Event(envelope, missed)
                }
                None => Read::Ended(cursor.reason().expect("an ended cursor has a reason")),
            };
        }
        if !self.has_unread(cursor) {
            return Read::Empty;
        }
        let read_to = cursor.read_to.load(Ordering::Relaxed);
        cursor.read_to.store(self.version + 1, Ordering::Relaxed);
        self.unread -= 1;
        let envelope = self.current.clone().expect("checked by has_unread");
        Read::Event(envelope, self.version - read_to)
    }

    /// Events waiting for reader `cursor` now (0 or 1), and how many it has lost so far that it
    /// has not yet been told of (superseded since its last read).
    pub(crate) fn pending(&self, cursor: &Cursor) -> (usize, u64) {
        if let Some((_, missed, _)) = self.kept.iter().find(|(id, ..)| *id == cursor.id) {
            return (1, *missed);
        }
        if cursor.is_ended() || !self.has_unread(cursor) {
            return (0, 0);
        }
        (1, self.version - cursor.read_to.load(Ordering::Relaxed))
    }

    /// Ends reader `id`, keeping its unread event for it. `false` if it is not attached here.
    pub(crate) fn end_one(&mut self, id: u64, reason: EndReason) -> (bool, Option<Envelope<E>>) {
        let Some(index) = self.readers.iter().position(|c| c.id == id) else {
            return (false, None);
        };
        let cursor = self.readers.swap_remove(index);
        self.keep_unread(&cursor);
        cursor.end(0, reason);
        (true, self.forget_if_unread())
    }

    /// Ends every reader, keeping their unread events; hands back the cell's envelope.
    pub(crate) fn end_all(&mut self, reason: EndReason) -> Option<Envelope<E>> {
        for cursor in std::mem::take(&mut self.readers) {
            self.keep_unread(&cursor);
            cursor.end(0, reason);
        }
        self.forget_if_unread()
    }

    fn keep_unread(&mut self, cursor: &Cursor) {
        if self.has_unread(cursor) {
            self.unread -= 1;
            let missed = self.version - cursor.read_to.load(Ordering::Relaxed);
            let envelope = self.current.clone().expect("checked by has_unread");
            self.kept.push((cursor.id, missed, envelope));
        }
    }

    /// Detaches reader `id` (it is going away); hands back what it no longer needs.
    pub(crate) fn detach(&mut self, id: u64) -> (bool, Option<Envelope<E>>, Option<Envelope<E>>) {
        let kept = self
            .kept
            .iter()
            .position(|(reader, ..)| *reader == id)
            .map(|index| self.kept.swap_remove(index).2);
        let Some(index) = self.readers.iter().position(|c| c.id == id) else {
            return (false, kept, None);
        };
        let cursor = self.readers.swap_remove(index);
        if self.has_unread(&cursor) {
            self.unread -= 1;
        }
        (true, kept, self.forget_if_unread())
    }

    /// With no reader left, the cell holds nothing (the envelope goes back to the caller).
    fn forget_if_unread(&mut self) -> Option<Envelope<E>> {
        if self.readers.is_empty() {
            debug_assert_eq!(self.unread, 0);
            self.current.take()
        } else {
            None
        }
    }
}

/// The reading half of a typed keep-latest subscription.
pub(crate) struct LatestReader<E: Send + Sync + 'static> {
    topic: Arc<Topic<E>>,
    cursor: Arc<Cursor>,
    /// The waiters' generation this reader last parked in.
    registered: u64,
    /// Events lost just before the event last returned (or before the end).
    missed: u64,
    /// Events lost before the event last returned, in all.
    lost: u64,
}

impl<E: Send + Sync + 'static> LatestReader<E> {
    pub(crate) fn new(topic: Arc<Topic<E>>, cursor: Arc<Cursor>) -> Self {
        Self {
            topic,
            cursor,
            registered: NOT_PARKED,
            missed: 0,
            lost: 0,
        }
    }

    pub(crate) fn cursor(&self) -> &Arc<Cursor> {
        &self.cursor
    }

    pub(crate) fn missed(&self) -> u64 {
        self.missed
    }

    /// Every event this subscription has lost so far, including those superseded since its
    /// last read.
    pub(crate) fn dropped(&self) -> u64 {
        self.lost
            + self
                .topic
                .with_latest(|cell, _| cell.pending(&self.cursor).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.topic
            .with_latest(|cell, _| cell.pending(&self.cursor).0)
    }

    /// The next event if there is one now: `Ready(Ok)`, `Ready(Err)` with the reason once ended
    /// and read to the end, or `Pending` (parking `waker` if given).
    pub(crate) fn poll_take(
        &mut self,
        waker: Option<&Waker>,
    ) -> Poll<Result<Envelope<E>, EndReason>> {
        let cursor = &self.cursor;
        let registered = &mut self.registered;
        let read = self.topic.with_latest(|cell, waiters| {
            let read = cell.read(cursor);
            if let (Read::Empty, Some(waker)) = (&read, waker) {
                // Under the topic lock: the next send sees this reader parked.
                waiters.register(cursor.id, waker, registered);
            }
            read
        });
        match read {
            Read::Event(envelope, missed) => {
                self.missed = missed;
                self.lost += missed;
                Poll::Ready(Ok(envelope))
            }
            Read::Empty => Poll::Pending,
            Read::Ended(reason) => {
                self.missed = 0;
                Poll::Ready(Err(reason))
            }
        }
    }
}

impl<E: Send + Sync + 'static> Drop for LatestReader<E> {
    fn drop(&mut self) {
        self.topic.remove(self.cursor.id);
    }
}
