//! What `vgpu-host` reports about itself and its clients: the document its control socket
//! (`--control PATH`) answers with as JSON, and from which its Prometheus endpoint (`--metrics
//! ADDR`) is rendered. `vgpuctl top` and `vgpuctl smi --host` read it.
//!
//! Counters only grow while a client lives; a client that is gone is no longer listed. Rates
//! come from two reports ([`ClientReport::rates_since`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Version of this document's layout; a reader refuses another.
pub const REPORT_VERSION: u32 = 1;

/// Upper bounds of the latency histogram's buckets, in microseconds: bucket `i` counts calls
/// that took less than `2^i` µs (the last bucket, beyond these, counts the rest).
pub const LATENCY_BOUNDS_US: [u64; 23] = {
    let mut bounds = [0u64; 23];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 1 << i;
        i += 1;
    }
    bounds
};

/// Buckets of the latency histogram: one per bound and one for slower calls.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The supervisor's process id.
    pub host_pid: u32,
    /// Seconds since the supervisor started.
    pub uptime_seconds: f64,
    /// Worker processes serving a client.
    pub workers: u64,
    /// Spare workers (driver loaded, waiting for a client).
    pub spares: u64,
    /// New clients refused because `--max-clients` were served.
    pub clients_refused: u64,
    /// The region served, if any.
    pub region: Option<RegionReport>,
    /// One entry per client, ordered by client id.
    pub clients: Vec<ClientReport>,
}

/// The region's bulk area (messages larger than a slot, zero-copy pinned memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionReport {
    /// The region file.
    pub path: String,
    /// Bytes of the bulk area.
    pub bulk_bytes: u64,
    /// Bytes of it owned now.
    pub bulk_used_bytes: u64,
}

/// How a client reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Channels in the shared-memory region.
    Region,
    /// TCP connections.
    Tcp,
}

impl Transport {
    /// `region` or `tcp`.
    pub fn word(self) -> &'static str {
        match self {
            Transport::Region => "region",
            Transport::Tcp => "tcp",
        }
    }
}

/// One client (one guest process, served by one worker process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    /// The client's token in hex: unique per guest process, stable for its life.
    pub client: String,
    /// The guest process id (in the guest's kernel; over TCP, what the peer said).
    pub pid: u32,
    /// How it reaches the host.
    pub transport: Transport,
    /// The region path (region clients).
    pub region: Option<String>,
    /// The peer's IP address (TCP clients).
    pub peer: Option<String>,
    /// The worker process serving it.
    pub worker_pid: u32,
    /// Seconds since its worker took it.
    pub age_seconds: f64,
    /// Whether its worker publishes counters (false for a moment after it was assigned, or
    /// when the worker could not map its counters).
    pub counted: bool,
    /// Device memory its allocations hold, bytes.
    pub gpu_memory_bytes: u64,
    /// Contexts it holds: created ones and active primary contexts.
    pub contexts: u64,
    /// Modules and libraries loaded.
    pub modules: u64,
    /// Streams created.
    pub streams: u64,
    /// Events created.
    pub events: u64,
    /// Guest threads being served (channels or connections).
    pub threads: u64,
    /// Bytes of the region's bulk area it owns: its zero-copy pinned memory and its messages
    /// in flight.
    pub bulk_bytes: u64,
    /// Request frames queued in its request rings and not yet taken (region clients): posted
    /// calls the worker has not reached.
    pub posted_backlog: u64,
    /// Calls served.
    pub calls: Calls,
    /// Time from having a synchronous driver call to having sent its reply.
    pub latency: Histogram,
    /// Bytes copied between guest memory and the GPU.
    pub copied: Copied,
    /// Posted calls that failed (each reported later, as a deferred error).
    pub deferred_errors: u64,
    /// Requests refused by the client's quotas.
    pub refusals: Refusals,
}

/// Calls by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calls {
    /// Driver calls answered.
    pub synchronous: u64,
    /// Driver calls posted (run without a reply).
    pub posted: u64,
    /// vgpu's own requests (handshake, flush, callbacks, NVML facts).
    pub special: u64,
}

/// A latency histogram: `buckets[i]` counts calls below `LATENCY_BOUNDS_US[i]` µs and at or
/// above the bound before it; the last bucket counts the slower ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative), [`LATENCY_BUCKETS`] of them.
    pub buckets: Vec<u64>,
    /// Sum of the observed times, seconds.
    pub sum_seconds: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; LATENCY_BUCKETS],
            sum_seconds: 0.0,
        }
    }
}

impl Histogram {
    /// Calls observed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The observations since `earlier` (a report of the same client).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The upper bound, in seconds, of the bucket holding quantile `q` (0..=1); `None` without
    /// observations, infinity when it falls in the last bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    LATENCY_BOUNDS_US
                        .get(i)
                        .map_or(f64::INFINITY, |us| *us as f64 / 1e6),
                );
            }
        }
        Some(f64::INFINITY)
    }
}

/// Bytes by the way they travelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathBytes {
    /// Inside ring slots, with the request or reply.
    pub inline: u64,
    /// Through the region's bulk area, with the request or reply.
    pub bulk: u64,
    /// Over a TCP connection, with the request or reply.
    pub stream: u64,
    /// Read or written by the GPU in the client's zero-copy memory (pinned allocations, and
    /// the staging slots of large pageable copies): no bytes travelled.
    pub zero_copy: u64,
}

impl PathBytes {
    /// All paths together.
    pub fn total(&self) -> u64 {
        self.inline + self.bulk + self.stream + self.zero_copy
    }
}

/// Bytes copied by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    /// Guest memory to the GPU.
    pub htod: PathBytes,
    /// The GPU to guest memory.
    pub dtoh: PathBytes,
}

/// Requests refused by quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// Allocations past `--client-memory-mib`.
    pub memory: u64,
    /// Contexts past `--client-contexts`.
    pub contexts: u64,
}

/// A client's rates between two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Driver calls (synchronous and posted) per second.
    pub calls_per_second: f64,
    /// Bytes copied per second, host to device.
    pub htod_bytes_per_second: f64,
    /// Bytes copied per second, device to host.
    pub dtoh_bytes_per_second: f64,
    /// The latency of the calls in between.
    pub latency: Histogram,
}

impl ClientReport {
    /// Rates since `earlier`, a report of the same client `seconds` before this one.
    pub fn rates_since(&self, earlier: &ClientReport, seconds: f64) -> Rates {
        let per_second = |now: u64, then: u64| {
            if seconds > 0.0 {
                now.saturating_sub(then) as f64 / seconds
            } else {
                0.0
            }
        };
        Rates {
            calls_per_second: per_second(
                self.calls.synchronous + self.calls.posted,
                earlier.calls.synchronous + earlier.calls.posted,
            ),
            htod_bytes_per_second: per_second(
                self.copied.htod.total(),
                earlier.copied.htod.total(),
            ),
            dtoh_bytes_per_second: per_second(
                self.copied.dtoh.total(),
                earlier.copied.dtoh.total(),
            ),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_name_the_bucket_bound() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 90 calls under 8 µs, 10 under 1024 µs.
        h.buckets[3] = 90;
        h.buckets[10] = 10;
        assert_eq!(h.quantile(0.5), Some(8e-6));
        assert_eq!(h.quantile(0.9), Some(8e-6));
        assert_eq!(h.quantile(0.99), Some(1024e-6));
        h.buckets[LATENCY_BUCKETS - 1] = 1000;
        assert_eq!(h.quantile(0.99), Some(f64::INFINITY));
        let later = Histogram {
            buckets: h.buckets.iter().map(|n| n + 1).collect(),
            sum_seconds: h.sum_seconds + 1.0,
        };
        assert_eq!(later.since(&h).count(), LATENCY_BUCKETS as u64);
    }
}
