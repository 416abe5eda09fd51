//! Single-producer single-consumer index protocol of one ring in shared memory.
//!
//! The ring's control words live in the region; the slot bytes live next to them. The producer owns
//! `head` (count of published slots), the consumer owns `tail` (count of released slots). Each side keeps
//! its own counter in process memory and only *reads* the peer's counter from shared memory, validating
//! it (`head - tail` must never exceed the slot count), so a hostile peer can make a call fail but never
//! make us index out of bounds.

use crate::sync::{fence, AtomicU32, Ordering};

/// One cache line, so that the producer's and consumer's words never share a line.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

/// Control words of one ring (`#[repr(C)]`, lives in the region).
#[repr(C)]
pub(crate) struct RingControl {
    /// Published-slot counter, written only by the producer; also the consumer's futex word.
    pub(crate) head: Line<AtomicU32>,
    /// Released-slot counter, written only by the consumer; also the producer's futex word.
    pub(crate) tail: Line<AtomicU32>,
    /// Non-zero while the consumer sleeps (or is about to sleep) on `head`.
    pub(crate) consumer_waiting: Line<AtomicU32>,
    /// Non-zero while the producer sleeps (or is about to sleep) on `tail`.
    pub(crate) producer_waiting: Line<AtomicU32>,
}

/// Peer wrote a counter that no correct peer could have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingCorrupt;

impl RingControl {
    /// Builds a zeroed ring (used by model tests; shared rings are reset with [`RingControl::reset`]).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        RingControl {
            head: Line(AtomicU32::new(0)),
            tail: Line(AtomicU32::new(0)),
            consumer_waiting: Line(AtomicU32::new(0)),
            producer_waiting: Line(AtomicU32::new(0)),
        }
    }

    /// Zeroes the counters. Only called by the side that just claimed the channel, before the claim is
    /// published with a Release store of the channel status (which orders these stores for the peer).
    pub(crate) fn reset(&self) {
        self.head.0.store(0, Ordering::Relaxed);
        self.tail.0.store(0, Ordering::Relaxed);
        self.consumer_waiting.0.store(0, Ordering::Relaxed);
        self.producer_waiting.0.store(0, Ordering::Relaxed);
    }
}

/// Producer cursor (process-local copy of `head`, and the last `tail` it read).
#[derive(Debug, Default)]
pub(crate) struct Producer {
    pub(crate) head: u32,
    /// `tail` as last loaded (Acquire). Slots before it stay free however stale it is, so the
    /// shared `tail` line is read only when the ring looks full: one cache-line transfer less per
    /// message.
    pub(crate) seen_tail: std::cell::Cell<u32>,
}

/// Consumer cursor (process-local copy of `tail`).
#[derive(Debug, Default)]
pub(crate) struct Consumer {
    pub(crate) tail: u32,
}

impl Producer {
    /// Index of the next free slot, or `None` when the ring is full.
    pub(crate) fn free_slot(
        &self,
        ring: &RingControl,
        slots: u32,
    ) -> Result<Option<u32>, RingCorrupt> {
        if self.head.wrapping_sub(self.seen_tail.get()) < slots {
            // Free by an earlier Acquire load of `tail` (below): no need to touch the shared line.
            return Ok(Some(self.head % slots));
        }
        // SYNC POINT: pairs with the Release store of `tail` in `Consumer::release`: the consumer has
        // finished reading a slot before we may overwrite it.
        let tail = ring.tail.0.load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > slots {
            return Err(RingCorrupt);
        }
        self.seen_tail.set(tail);
        Ok((used < slots).then_some(self.head % slots))
    }

    /// Publishes the slot returned by `free_slot` after its bytes were written. Returns whether the
    /// consumer announced that it sleeps (the caller must then wake it on `head`).
    pub(crate) fn publish(&mut self, ring: &RingControl) -> bool {
        self.head = self.head.wrapping_add(1);
        // SYNC POINT: pairs with the Acquire load of `head` in `Consumer::ready_slot`: the slot bytes
        // written before this store are visible to the consumer that sees the new `head`.
        ring.head.0.store(self.head, Ordering::Release);
        // SYNC POINT: pairs with the SeqCst fence in `Consumer::prepare_sleep` (Dekker pattern): either
        // we see `consumer_waiting` set, or the consumer's re-check sees our new `head`.
        fence(Ordering::SeqCst);
        ring.consumer_waiting.0.load(Ordering::Relaxed) != 0
    }

    /// Announces that the producer is about to sleep on a full ring; returns the `tail` value to sleep on
    /// and whether the ring is still full (if not, do not sleep).
    pub(crate) fn prepare_sleep(&self, ring: &RingControl, slots: u32) -> (u32, bool) {
        // SYNC POINT: pairs with the SeqCst fence in `Consumer::release`.
        ring.producer_waiting.0.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // SYNC POINT: pairs with the Release store of `tail` in `Consumer::release`.
        let tail = ring.tail.0.load(Ordering::Acquire);
        (tail, self.head.wrapping_sub(tail) >= slots)
    }

    /// Clears the sleep announcement.
    pub(crate) fn end_sleep(&self, ring: &RingControl) {
        // SYNC POINT: read by the consumer after its SeqCst fence in `Consumer::release`; a stale 1 only
        // costs one spurious wake.
        ring.producer_waiting.0.store(0, Ordering::Relaxed);
    }
}

impl Consumer {
    /// Index of the next published slot, or `None` when the ring is empty.
    pub(crate) fn ready_slot(
        &self,
        ring: &RingControl,
        slots: u32,
    ) -> Result<Option<u32>, RingCorrupt> {
        // SYNC POINT: pairs with the Release store of `head` in `Producer::publish`.
        let head = ring.head.0.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        if avail > slots {
            return Err(RingCorrupt);
        }
        Ok((avail > 0).then_some(self.tail % slots))
    }

    /// Releases the slot returned by `ready_slot` once its bytes were copied out. Returns whether the
    /// producer announced that it sleeps (the caller must then wake it on `tail`).
    pub(crate) fn release(&mut self, ring: &RingControl) -> bool {
        self.tail = self.tail.wrapping_add(1);
        // SYNC POINT: pairs with the Acquire load of `tail` in `Producer::free_slot` / `prepare_sleep`.
        ring.tail.0.store(self.tail, Ordering::Release);
        // SYNC POINT: pairs with the SeqCst fence in `Producer::prepare_sleep`.
        fence(Ordering::SeqCst);
        ring.producer_waiting.0.load(Ordering::Relaxed) != 0
    }

    /// Announces that the consumer is about to sleep on an empty ring; returns the `head` value to sleep
    /// on and whether the ring is still empty (if not, do not sleep).
    pub(crate) fn prepare_sleep(&self, ring: &RingControl) -> (u32, bool) {
        // SYNC POINT: pairs with the SeqCst fence in `Producer::publish`.
        ring.consumer_waiting.0.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // SYNC POINT: pairs with the Release store of `head` in `Producer::publish`.
        let head = ring.head.0.load(Ordering::Acquire);
        (head, head == self.tail)
    }

    /// Clears the sleep announcement.
    pub(crate) fn end_sleep(&self, ring: &RingControl) {
        // SYNC POINT: read by the producer after its SeqCst fence in `Producer::publish`; a stale 1 only
        // costs one spurious wake.
        ring.consumer_waiting.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the ring orderings: `RUSTFLAGS="--cfg loom" cargo test -p transport --release --lib loom`.
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    const SLOTS: u32 = 2;

    struct Shared {
        ring: RingControl,
        slots: [UnsafeCell<u64>; SLOTS as usize],
    }

    // SAFETY: slot cells are only accessed under the ring protocol being checked; loom reports any race.
    unsafe impl Sync for Shared {}

    /// Three messages through a two-slot ring (so the producer wraps and must wait for a release): every
    /// slot read must happen-after its write, and every overwrite must happen-after the previous read.
    #[test]
    fn loom_ring_publish_consume_wraps() {
        loom::model(|| {
            let shared = Arc::new(Shared {
                ring: RingControl::new(),
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let p = shared.clone();
            let producer = thread::spawn(move || {
                let mut cursor = Producer::default();
                let mut value = 1u64;
                while value <= 3 {
                    match cursor.free_slot(&p.ring, SLOTS).unwrap() {
                        Some(i) => {
                            p.slots[i as usize].with_mut(|s| {
                                // SAFETY: the slot is free per the protocol under test.
                                unsafe { *s = value }
                            });
                            cursor.publish(&p.ring);
                            value += 1;
                        }
                        None => thread::yield_now(),
                    }
                }
            });
            let mut cursor = Consumer::default();
            let mut expect = 1u64;
            while expect <= 3 {
                match cursor.ready_slot(&shared.ring, SLOTS).unwrap() {
                    Some(i) => {
                        // SAFETY: the slot is published per the protocol under test.
                        let got = shared.slots[i as usize].with(|s| unsafe { *s });
                        assert_eq!(got, expect);
                        cursor.release(&shared.ring);
                        expect += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            producer.join().unwrap();
        });
    }

    /// The sleep announcement: if the consumer decides to sleep (ring still empty after announcing), the
    /// producer's publish must report that a wake is needed. No lost wake-up.
    #[test]
    fn loom_ring_no_lost_wakeup() {
        loom::model(|| {
            let shared = Arc::new(Shared {
                ring: RingControl::new(),
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let p = shared.clone();
            let producer = thread::spawn(move || {
                let mut cursor = Producer::default();
                let i = cursor.free_slot(&p.ring, SLOTS).unwrap().unwrap();
                // SAFETY: the slot is free per the protocol under test.
                p.slots[i as usize].with_mut(|s| unsafe { *s = 7 });
                cursor.publish(&p.ring)
            });
            let cursor = Consumer::default();
            let (_, would_sleep) = cursor.prepare_sleep(&shared.ring);
            let woke = producer.join().unwrap();
            if would_sleep {
                assert!(
                    woke,
                    "consumer slept but producer saw no waiter: lost wake-up"
                );
            }
        });
    }
}
