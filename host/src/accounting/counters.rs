//! The layout of one client's counters and the calls that count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use host_report::LATENCY_BUCKETS;

/// `"VGPUSTAT"` little-endian: the block was set up by a worker of this layout.
const MAGIC: u64 = u64::from_le_bytes(*b"VGPUSTAT");
/// Layout version of [`Counters`]; the supervisor ignores a block of another.
pub const COUNTERS_VERSION: u64 = 1;

/// Which way bytes were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Guest memory to the GPU.
    HostToDevice = 0,
    /// The GPU to guest memory.
    DeviceToHost = 1,
}

/// How copied bytes travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// In ring slots, with the request or reply.
    Inline = 0,
    /// Through the region's bulk area, with the request or reply.
    Bulk = 1,
    /// Over a socket, with the request or reply.
    Stream = 2,
    /// The GPU read or wrote the client's zero-copy memory.
    ZeroCopy = 3,
}

const PATHS: usize = 4;

/// Call classes.
const SYNCHRONOUS: usize = 0;
const POSTED: usize = 1;
const SPECIAL: usize = 2;

/// What the worker's main loop measures and publishes (overwritten each time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Device memory the client's allocations hold, bytes.
    pub memory_bytes: u64,
    /// Contexts: created ones and active primary contexts.
    pub contexts: u64,
    /// Modules and libraries.
    pub modules: u64,
    /// Streams.
    pub streams: u64,
    /// Events.
    pub events: u64,
    /// Guest threads served.
    pub threads: u64,
    /// Allocations refused by the memory quota (a counter kept by the quota).
    pub memory_refusals: u64,
    /// Contexts refused by the context quota (a counter kept by the quota).
    pub context_refusals: u64,
}

/// One client's counters, as they lie in shared memory (`#[repr(C)]`, atomics only).
#[repr(C)]
pub struct Counters {
    magic: AtomicU64,
    version: AtomicU64,
    calls: [AtomicU64; 3],
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_sum_ns: AtomicU64,
    copied: [[AtomicU64; PATHS]; 2],
    deferred_errors: AtomicU64,
    gauges: [AtomicU64; 8],
}

const _: () = assert!(std::mem::size_of::<Counters>() <= 4096);

/// A copy of a [`Counters`] block at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Synchronous driver calls answered.
    pub synchronous: u64,
    /// Driver calls posted.
    pub posted: u64,
    /// vgpu's own requests.
    pub special: u64,
    /// Latency buckets of the synchronous calls (`host_report::LATENCY_BOUNDS_US`).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Their summed latency, nanoseconds.
    pub latency_sum_ns: u64,
    /// Bytes copied, `[direction][path]`.
    pub copied: [[u64; PATHS]; 2],
    /// Posted calls that failed.
    pub deferred_errors: u64,
    /// The last published gauges.
    pub gauges: Gauges,
}

/// The latency bucket of a call that took `elapsed`: bucket `i` holds times below `2^i` µs.
fn bucket(elapsed: Duration) -> usize {
    let us = elapsed
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(elapsed.subsec_micros()));
    ((u64::BITS - us.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
}

impl Default for Counters {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl Counters {
    /// A block of zeros (not yet marked ready).
    pub fn zeroed() -> Self {
        Self {
            magic: AtomicU64::new(0),
            version: AtomicU64::new(0),
            calls: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
            copied: Default::default(),
            deferred_errors: AtomicU64::new(0),
            gauges: Default::default(),
        }
    }

    /// Marks the block as counted by a worker of this layout.
    pub fn mark_ready(&self) {
        // SYNC POINT: Relaxed: pairs with the Relaxed loads in `snapshot`; a reader that sees
        // the magic before earlier zero counters only reads zeros.
        self.version.store(COUNTERS_VERSION, Ordering::Relaxed);
        // SYNC POINT: as above.
        self.magic.store(MAGIC, Ordering::Relaxed);
    }

    /// A synchronous driver call was answered `elapsed` after it was received.
    #[inline]
    pub fn answered(&self, elapsed: Duration) {
        // SYNC POINT: Relaxed counter; read Relaxed by the supervisor's `snapshot`, orders nothing.
        self.calls[SYNCHRONOUS].fetch_add(1, Ordering::Relaxed);
        // SYNC POINT: as above.
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // SYNC POINT: as above.
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A driver call was posted (run without a reply).
    #[inline]
    pub fn posted(&self) {
        // SYNC POINT: Relaxed counter; read Relaxed by `snapshot`, orders nothing.
        self.calls[POSTED].fetch_add(1, Ordering::Relaxed);
    }

    /// One of vgpu's own requests was served.
    #[inline]
    pub fn special(&self) {
        // SYNC POINT: Relaxed counter; read Relaxed by `snapshot`, orders nothing.
        self.calls[SPECIAL].fetch_add(1, Ordering::Relaxed);
    }

    /// `bytes` were copied `direction` by `path`.
    #[inline]
    pub fn copied(&self, direction: Direction, path: Path, bytes: u64) {
        // SYNC POINT: Relaxed counter; read Relaxed by `snapshot`, orders nothing.
        self.copied[direction as usize][path as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// A posted call failed (its error is deferred to the thread's next synchronous call).
    #[inline]
    pub fn deferred_error(&self) {
        // SYNC POINT: Relaxed counter; read Relaxed by `snapshot`, orders nothing.
        self.deferred_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the gauges the worker's main loop measured.
    pub fn publish(&self, g: &Gauges) {
        let values = [
            g.memory_bytes,
            g.contexts,
            g.modules,
            g.streams,
            g.events,
            g.threads,
            g.memory_refusals,
            g.context_refusals,
        ];
        for (slot, value) in self.gauges.iter().zip(values) {
            // SYNC POINT: Relaxed gauge; read Relaxed by `snapshot`, orders nothing.
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// What the block holds now, or `None` when no worker of this layout has marked it ready.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // SYNC POINT: Relaxed loads of every counter, pairing with the Relaxed stores and
        // RMWs above; a snapshot is not atomic as a whole.
        if load(&self.magic) != MAGIC || load(&self.version) != COUNTERS_VERSION {
            return None;
        }
        let g: [u64; 8] = std::array::from_fn(|i| load(&self.gauges[i]));
        Some(Snapshot {
            synchronous: load(&self.calls[SYNCHRONOUS]),
            posted: load(&self.calls[POSTED]),
            special: load(&self.calls[SPECIAL]),
            latency: std::array::from_fn(|i| load(&self.latency[i])),
            latency_sum_ns: load(&self.latency_sum_ns),
            copied: std::array::from_fn(|d| std::array::from_fn(|p| load(&self.copied[d][p]))),
            deferred_errors: load(&self.deferred_errors),
            gauges: Gauges {
                memory_bytes: g[0],
                contexts: g[1],
                modules: g[2],
                streams: g[3],
                events: g[4],
                threads: g[5],
                memory_refusals: g[6],
                context_refusals: g[7],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_powers_of_two_microseconds() {
        let us = Duration::from_micros;
        assert_eq!(bucket(Duration::from_nanos(999)), 0);
        assert_eq!(bucket(us(1)), 1);
        assert_eq!(bucket(us(3)), 2);
        assert_eq!(bucket(us(4)), 3);
        assert_eq!(bucket(us(1023)), 10);
        assert_eq!(bucket(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
        for i in 0..LATENCY_BUCKETS - 1 {
            let bound = host_report::LATENCY_BOUNDS_US[i];
            assert_eq!(bucket(us(bound - 1)), i, "just under {bound} µs");
        }
    }

    #[test]
    fn a_block_counts_only_once_marked_ready() {
        let c = Counters::zeroed();
        assert_eq!(c.snapshot(), None);
        c.mark_ready();
        c.answered(Duration::from_micros(5));
        c.answered(Duration::from_micros(6));
        c.posted();
        c.special();
        c.copied(Direction::DeviceToHost, Path::Bulk, 1000);
        c.copied(Direction::DeviceToHost, Path::Bulk, 24);
        c.deferred_error();
        c.publish(&Gauges {
            memory_bytes: 7,
            threads: 2,
            ..Gauges::default()
        });
        let s = c.snapshot().expect("ready");
        assert_eq!((s.synchronous, s.posted, s.special), (2, 1, 1));
        assert_eq!(s.latency[3], 2);
        assert_eq!(s.latency_sum_ns, 11_000);
        assert_eq!(s.copied[1][1], 1024);
        assert_eq!(s.deferred_errors, 1);
        assert_eq!((s.gauges.memory_bytes, s.gauges.threads), (7, 2));
    }
}
