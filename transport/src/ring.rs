//! Single-producer single-consumer index protocol of one ring in shared memory.
//!
//! The ring's control words live in the region; the slot bytes live next to them. The producer owns
//! `head` (count of published slots), the consumer owns `tail` (count of released slots). Each side keeps
//! its own counter in process memory and only *reads* the peer's counter from shared memory, validating
//! it (`head - tail` must never exceed the slot count), so a hostile peer can make a call fail but never
//! make us index out of bounds.
//!
//! Each slot also carries a sequence word (`seq`, in the frame header) that the producer stores last,
//! with Release: [`slot_seq`] of the claim epoch and the message count. The consumer's fast path polls
//! only that word of the very slot it is about to read, so a message costs one cache-line transfer per
//! direction instead of two (`head`, then the slot). `head` is still published, for the sleep/wake
//! protocol and for validation, and read only on the way to sleep.

use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

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

/// Peer wrote a counter or sequence word that no correct peer could have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingCorrupt {
    /// `head - tail` exceeds the slot count.
    Counter,
    /// `head` says the next slot is published but its sequence word disagrees.
    Sequence,
}

/// Sequence word of the slot holding message `count` (the ring's counter value before it was
/// published, wrapping) of the channel claim `epoch`. The epoch in the high half means that a slot
/// written under an earlier claim never matches; the low half is `count + 1`, so the value 0 that
/// claims reset the words to never matches during the first pass through the ring either.
pub(crate) fn slot_seq(epoch: u32, count: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(count.wrapping_add(1))
}

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
    /// The slots' sequence words are reset alongside (`Region::reset_rings`).
    pub(crate) fn reset(&self) {
        self.head.0.store(0, Ordering::Relaxed);
        self.tail.0.store(0, Ordering::Relaxed);
        self.consumer_waiting.0.store(0, Ordering::Relaxed);
        self.producer_waiting.0.store(0, Ordering::Relaxed);
    }
}

/// Producer cursor (process-local copy of `head`, and the last `tail` it read).
#[derive(Debug)]
pub(crate) struct Producer {
    pub(crate) head: u32,
    /// `tail` as last loaded (Acquire). Slots before it stay free however stale it is, so the
    /// shared `tail` line is read only when the ring looks full: one cache-line transfer less per
    /// message.
    pub(crate) seen_tail: std::cell::Cell<u32>,
    /// Claim epoch of the channel, mixed into every slot sequence word.
    pub(crate) epoch: u32,
}

/// Consumer cursor (process-local copy of `tail`).
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) tail: u32,
    /// Claim epoch of the channel: only sequence words of this claim are accepted.
    pub(crate) epoch: u32,
}

impl Producer {
    /// A producer at the start of a freshly reset ring of claim `epoch`.
    pub(crate) fn new(epoch: u32) -> Self {
        Producer {
            head: 0,
            seen_tail: std::cell::Cell::new(0),
            epoch,
        }
    }

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
            return Err(RingCorrupt::Counter);
        }
        self.seen_tail.set(tail);
        Ok((used < slots).then_some(self.head % slots))
    }

    /// Publishes the slot returned by `free_slot` after its bytes were written; `seq` is that slot's
    /// sequence word. Returns whether the consumer announced that it sleeps (the caller must then wake
    /// it on `head`).
    pub(crate) fn publish(&mut self, ring: &RingControl, seq: &AtomicU64) -> bool {
        // SYNC POINT: pairs with the Acquire load of the slot's `seq` in `Consumer::ready`: the slot
        // bytes written before this store are visible to the consumer that sees this value.
        seq.store(slot_seq(self.epoch, self.head), Ordering::Release);
        self.head = self.head.wrapping_add(1);
        // SYNC POINT: pairs with the Acquire load of `head` in `Consumer::prepare_sleep`: a consumer
        // that sees the new `head` also sees the `seq` stored above.
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
    /// A consumer at the start of a freshly reset ring of claim `epoch`.
    pub(crate) fn new(epoch: u32) -> Self {
        Consumer { tail: 0, epoch }
    }

    /// Index of the slot the next message arrives in.
    pub(crate) fn next_slot(&self, slots: u32) -> u32 {
        self.tail % slots
    }

    /// Whether the next message is published; `seq` is the sequence word of slot
    /// [`Consumer::next_slot`]. The fast path: one load of the line the message itself lives in.
    pub(crate) fn ready(&self, seq: &AtomicU64) -> bool {
        // SYNC POINT: pairs with the Release store of `seq` in `Producer::publish`: the slot bytes are
        // read only after this load saw the value published for them.
        seq.load(Ordering::Acquire) == slot_seq(self.epoch, self.tail)
    }

    /// Releases the slot of the message just read once its bytes were copied out. Returns whether the
    /// producer announced that it sleeps (the caller must then wake it on `tail`).
    pub(crate) fn release(&mut self, ring: &RingControl) -> bool {
        self.tail = self.tail.wrapping_add(1);
        // SYNC POINT: pairs with the Acquire load of `tail` in `Producer::free_slot` / `prepare_sleep`.
        ring.tail.0.store(self.tail, Ordering::Release);
        // SYNC POINT: pairs with the SeqCst fence in `Producer::prepare_sleep`.
        fence(Ordering::SeqCst);
        ring.producer_waiting.0.load(Ordering::Relaxed) != 0
    }

    /// Announces that the consumer is about to sleep on an empty ring and re-checks. Returns the `head`
    /// value to sleep on while the ring is still empty, or `None` when the next message is there
    /// (`seq` as for [`Consumer::ready`]); the caller then must not sleep.
    ///
    /// `head` may be one *behind* `tail`: the consumer takes a message as soon as its `seq` is stored,
    /// and the producer stores `head` just after; that ring is empty (sleeping on the old `head` is
    /// safe: the producer's `head` store then changes the futex word, and its publish of the next
    /// message sees the announcement). `head` ahead of `tail` while the slot's `seq` disagrees cannot
    /// happen with a correct producer (it stores `seq` before `head`, both Release, and this `head`
    /// load is Acquire): `Sequence`. Any other `head` outside `tail - 1 ..= tail + slots`: `Counter`.
    pub(crate) fn prepare_sleep(
        &self,
        ring: &RingControl,
        slots: u32,
        seq: &AtomicU64,
    ) -> Result<Option<u32>, RingCorrupt> {
        // SYNC POINT: pairs with the SeqCst fence in `Producer::publish`.
        ring.consumer_waiting.0.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // SYNC POINT: pairs with the Release store of `head` in `Producer::publish`.
        let head = ring.head.0.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        if avail == 0 || avail == u32::MAX {
            return Ok(Some(head));
        }
        if avail > slots {
            return Err(RingCorrupt::Counter);
        }
        if self.ready(seq) {
            Ok(None)
        } else {
            Err(RingCorrupt::Sequence)
        }
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
    const EPOCH: u32 = 7;

    struct Shared {
        ring: RingControl,
        /// Each slot's sequence word, as in the frame header.
        seqs: [AtomicU64; SLOTS as usize],
        /// Each slot's other bytes.
        slots: [UnsafeCell<u64>; SLOTS as usize],
    }

    // SAFETY: slot cells are only accessed under the ring protocol being checked; loom reports any race.
    unsafe impl Sync for Shared {}

    impl Shared {
        /// A reset ring; slot 1 holds a sequence word left over from an earlier claim that, without the
        /// epoch, would read as "message 1 published".
        fn new() -> Arc<Self> {
            Arc::new(Shared {
                ring: RingControl::new(),
                seqs: [AtomicU64::new(0), AtomicU64::new(slot_seq(EPOCH - 1, 1))],
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            })
        }

        /// Producer: writes `value` into the next free slot and publishes it, if a slot is free.
        fn try_push(&self, cursor: &mut Producer, value: u64) -> Option<bool> {
            let i = cursor.free_slot(&self.ring, SLOTS).unwrap()? as usize;
            self.slots[i].with_mut(|s| {
                // SAFETY: the slot is free per the protocol under test.
                unsafe { *s = value }
            });
            Some(cursor.publish(&self.ring, &self.seqs[i]))
        }
    }

    /// Three messages through a two-slot ring (so the producer wraps and must wait for a release): every
    /// slot read must happen-after its write (through the slot's sequence word alone), every overwrite
    /// must happen-after the previous read, and a stale sequence word must not be taken for a message.
    #[test]
    fn loom_ring_publish_consume_wraps() {
        loom::model(|| {
            let shared = Shared::new();
            let p = shared.clone();
            let producer = thread::spawn(move || {
                let mut cursor = Producer::new(EPOCH);
                let mut value = 1u64;
                while value <= 3 {
                    match p.try_push(&mut cursor, value) {
                        Some(_) => value += 1,
                        None => thread::yield_now(),
                    }
                }
            });
            let mut cursor = Consumer::new(EPOCH);
            let mut expect = 1u64;
            while expect <= 3 {
                let i = cursor.next_slot(SLOTS) as usize;
                if cursor.ready(&shared.seqs[i]) {
                    // SAFETY: the slot is published per the protocol under test.
                    let got = shared.slots[i].with(|s| unsafe { *s });
                    assert_eq!(got, expect);
                    cursor.release(&shared.ring);
                    expect += 1;
                } else {
                    thread::yield_now();
                }
            }
            producer.join().unwrap();
        });
    }

    /// The consumer can take a message as soon as its sequence word is stored, before the producer
    /// stores `head`: after consuming message 0 it may go to sleep for message 1 while `head` still
    /// says 0, one behind its `tail`. That is an empty ring, not a corrupt one, and the second publish
    /// must then see the sleep announcement.
    #[test]
    fn loom_ring_sleep_while_head_lags() {
        loom::model(|| {
            let shared = Shared::new();
            let p = shared.clone();
            let producer = thread::spawn(move || {
                let mut cursor = Producer::new(EPOCH);
                p.try_push(&mut cursor, 1).unwrap();
                p.try_push(&mut cursor, 2).unwrap()
            });
            let mut cursor = Consumer::new(EPOCH);
            while !cursor.ready(&shared.seqs[0]) {
                thread::yield_now();
            }
            // SAFETY: the slot is published per the protocol under test.
            assert_eq!(shared.slots[0].with(|s| unsafe { *s }), 1);
            cursor.release(&shared.ring);
            let sleep_on = cursor
                .prepare_sleep(&shared.ring, SLOTS, &shared.seqs[1])
                .unwrap();
            if sleep_on.is_none() {
                // SAFETY: the slot is published per the protocol under test.
                assert_eq!(shared.slots[1].with(|s| unsafe { *s }), 2);
            }
            let woke = producer.join().unwrap();
            if sleep_on.is_some() {
                assert!(woke, "consumer slept but the second publish saw no waiter");
            }
        });
    }

    /// The sleep announcement: if the consumer decides to sleep (ring still empty after announcing), the
    /// producer's publish must report that a wake is needed (no lost wake-up); if it decides not to,
    /// the slot must be readable (a `head` it saw implies the slot's sequence word: no false
    /// `Sequence` error, and the read happens-after the write).
    #[test]
    fn loom_ring_no_lost_wakeup() {
        loom::model(|| {
            let shared = Shared::new();
            let p = shared.clone();
            let producer = thread::spawn(move || {
                let mut cursor = Producer::new(EPOCH);
                p.try_push(&mut cursor, 7).unwrap()
            });
            let cursor = Consumer::new(EPOCH);
            let sleep_on = cursor
                .prepare_sleep(&shared.ring, SLOTS, &shared.seqs[0])
                .unwrap();
            if sleep_on.is_none() {
                // SAFETY: the slot is published per the protocol under test.
                let got = shared.slots[0].with(|s| unsafe { *s });
                assert_eq!(got, 7);
            }
            let woke = producer.join().unwrap();
            if sleep_on.is_some() {
                assert!(
                    woke,
                    "consumer slept but producer saw no waiter: lost wake-up"
                );
            }
        });
    }
}
