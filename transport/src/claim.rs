//! The claim doorbell: a guest announces a newly claimed channel in the header's claim bitmap and bumps
//! the claim sequence word (the host's futex word); the host takes the bits. Compiled with loom atomics
//! under `--cfg loom` so the model test checks this very code.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Marks channel `index` as newly claimed. Must run after the Release store of CLAIMED in the channel's
/// status word, so the host that takes the bit and then loads the status sees the claim's fields.
pub(crate) fn announce(bits: &[AtomicU64], seq: &AtomicU32, index: u32) {
    // SYNC POINT: pairs with the AcqRel swap of the bitmap word in `take`.
    bits[(index / 64) as usize].fetch_or(1 << (index % 64), Ordering::Release);
    // SYNC POINT: pairs with the Acquire load of `claim_seq` in `Region::accept` (its futex word).
    seq.fetch_add(1, Ordering::Release);
}

/// Takes every announced channel index below `count` (each announcement is taken exactly once).
pub(crate) fn take(bits: &[AtomicU64], count: u32, out: &mut Vec<u32>) {
    for (w, word) in bits.iter().enumerate() {
        // SYNC POINT: pairs with the Release fetch_or in `announce`.
        let mut pending = word.swap(0, Ordering::AcqRel);
        while pending != 0 {
            let bit = pending.trailing_zeros();
            pending &= pending - 1;
            let index = w as u32 * 64 + bit;
            if index < count {
                out.push(index);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    const FREE: u64 = 0;
    const CLAIMED: u64 = 2;

    struct Shared {
        status: [AtomicU64; 2],
        token: [AtomicU64; 2],
        bits: [AtomicU64; 1],
        seq: AtomicU32,
    }

    /// Two guests race for channel 0 (the loser takes channel 1); the host takes the announcements and
    /// must see each winner's identity (written Relaxed before the Release of CLAIMED), exactly once.
    #[test]
    fn loom_claim_publishes_identity_once() {
        loom::model(|| {
            let s = Arc::new(Shared {
                status: [AtomicU64::new(FREE), AtomicU64::new(FREE)],
                token: [AtomicU64::new(0), AtomicU64::new(0)],
                bits: [AtomicU64::new(0)],
                seq: AtomicU32::new(0),
            });
            let guests: Vec<_> = (1..=2u64)
                .map(|token| {
                    let s = s.clone();
                    thread::spawn(move || {
                        for i in 0..2 {
                            if s.status[i]
                                .compare_exchange(FREE, 1, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                            {
                                s.token[i].store(token, Ordering::Relaxed);
                                s.status[i].store(CLAIMED, Ordering::Release);
                                announce(&s.bits, &s.seq, i as u32);
                                return;
                            }
                        }
                        panic!("two channels for two guests");
                    })
                })
                .collect();
            let mut seen = Vec::new();
            while seen.len() < 2 {
                let mut got = Vec::new();
                take(&s.bits, 2, &mut got);
                for i in got {
                    assert_eq!(s.status[i as usize].load(Ordering::Acquire), CLAIMED);
                    let token = s.token[i as usize].load(Ordering::Relaxed);
                    assert!(token == 1 || token == 2, "identity not visible: {token}");
                    seen.push(token);
                }
                thread::yield_now();
            }
            seen.sort_unstable();
            assert_eq!(seen, [1, 2]);
            for g in guests {
                g.join().unwrap();
            }
        });
    }
}
