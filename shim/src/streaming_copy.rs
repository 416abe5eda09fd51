//! Copies of large buffers with non-temporal (streaming) stores.
//!
//! A staged copy (`handlers/staged.rs`) moves megabytes between an application's pageable memory
//! and a zero-copy staging slot. `memcpy` below glibc's non-temporal threshold writes through the
//! cache: every destination line is first read from memory (a read for ownership), and the bytes
//! then evict what the application had cached. Streaming stores write whole lines straight to
//! memory, which is what a buffer that the GPU reads next (a staging slot) or that the
//! application reads much later (a 64 MiB download) wants. On the 2-core CI machine, 2 MiB chunks
//! through a 64 MiB buffer: memcpy 12–16 GB/s, streaming 19–28 GB/s (the ignored benchmark
//! below).
//!
//! Streaming stores are weakly ordered: [`copy`] ends with `sfence`, so the bytes are visible
//! before any later store (the ring's release of the request that tells the host to read them).

/// Copies `len` bytes from `src` to `dst` with streaming stores where the target has them.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `len` bytes; the ranges do not overlap.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        /// Below this a plain copy is as fast and keeps the bytes cached.
        const MIN_STREAMED: usize = 4096;
        if len < MIN_STREAMED {
            // SAFETY: per the contract.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            return;
        }
        let head = dst.align_offset(16).min(len);
        // SAFETY: per the contract: `head ≤ len` bytes at the start of both ranges.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
        let (mut s, mut d, mut n) = (
            // SAFETY: `head ≤ len`, inside both ranges.
            unsafe { src.add(head) },
            // SAFETY: as above.
            unsafe { dst.add(head) },
            len - head,
        );
        while n >= 64 {
            // SAFETY: 64 bytes remain in both ranges; `d` is 16-byte aligned (advanced from an
            // aligned start by multiples of 64); SSE2 is part of x86_64.
            unsafe {
                let a = _mm_loadu_si128(s.cast::<__m128i>());
                let b = _mm_loadu_si128(s.add(16).cast::<__m128i>());
                let c = _mm_loadu_si128(s.add(32).cast::<__m128i>());
                let e = _mm_loadu_si128(s.add(48).cast::<__m128i>());
                _mm_stream_si128(d.cast::<__m128i>(), a);
                _mm_stream_si128(d.add(16).cast::<__m128i>(), b);
                _mm_stream_si128(d.add(32).cast::<__m128i>(), c);
                _mm_stream_si128(d.add(48).cast::<__m128i>(), e);
                s = s.add(64);
                d = d.add(64);
            }
            n -= 64;
        }
        // SAFETY: the last `n < 64` bytes of both ranges; then order the streaming stores
        // before every later store of this thread.
        unsafe {
            std::ptr::copy_nonoverlapping(s, d, n);
            _mm_sfence();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: per the contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::copy;

    #[test]
    fn every_byte_arrives_for_odd_offsets_and_lengths() {
        let src: Vec<u8> = (0..(1usize << 20) + 200)
            .map(|i| (i * 131 + 7) as u8)
            .collect();
        for (from, to, len) in [
            (0, 0, 0),
            (3, 5, 1),
            (1, 0, 4095),
            (0, 1, 4096),
            (7, 13, 4097),
            (5, 3, 65_599),
            (16, 32, 1 << 20),
            (9, 2, (1 << 20) + 63),
        ] {
            let mut dst = vec![0xeeu8; len + 64];
            // SAFETY: both buffers hold the ranges named; they are distinct allocations.
            unsafe { copy(dst.as_mut_ptr().add(to), src.as_ptr().add(from), len) };
            assert_eq!(
                &dst[to..to + len],
                &src[from..from + len],
                "{from} {to} {len}"
            );
            assert!(
                dst[..to].iter().all(|&b| b == 0xee),
                "before {from} {to} {len}"
            );
            assert!(
                dst[to + len..].iter().all(|&b| b == 0xee),
                "after {from} {to} {len}"
            );
        }
    }

    /// `cargo test -p shim --release streaming_copy -- --ignored --nocapture`: GB/s of 2 MiB
    /// chunks through a 64 MiB buffer, from and to an 8 MiB ring (a staging buffer's size).
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn streaming_copy_rate() {
        let (total, ring, chunk) = (64usize << 20, 8usize << 20, 2usize << 20);
        let mut big = vec![1u8; total];
        let mut slots = vec![2u8; ring];
        for streaming in [false, true] {
            for to_big in [true, false] {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    for off in (0..total).step_by(chunk) {
                        let slot = slots.as_mut_ptr().wrapping_add(off % ring);
                        let page = big.as_mut_ptr().wrapping_add(off);
                        let (d, s) = if to_big { (page, slot) } else { (slot, page) };
                        let (d, s) = (std::hint::black_box(d), std::hint::black_box(s));
                        // SAFETY: both are `chunk` bytes inside their own buffers.
                        unsafe {
                            if streaming {
                                copy(d, s, chunk);
                            } else {
                                std::ptr::copy_nonoverlapping(s, d, chunk);
                            }
                        }
                    }
                    std::hint::black_box((&big, &slots));
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{} {}: {:.2} GB/s",
                    if streaming { "streaming" } else { "memcpy   " },
                    if to_big {
                        "slot -> pageable"
                    } else {
                        "pageable -> slot"
                    },
                    total as f64 / best / 1e9
                );
            }
        }
    }
}
