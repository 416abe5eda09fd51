//! One [`HostReport`] from the roster, the region and the workers' counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use host_report::{
    Calls, ClientReport, Copied, HostReport, PathBytes, Refusals, RegionReport, Transport,
    REPORT_VERSION,
};
use transport::Region;

use super::roster::{Member, Roster};
use crate::worker_link::Via;

/// Builds reports for the endpoints.
#[derive(Debug)]
pub struct Reporter {
    roster: Arc<Roster>,
    region: Option<(Region, PathBuf)>,
    started: Instant,
}

impl Reporter {
    /// A reporter over `roster` and the served region (if any), for a host started at
    /// `started`.
    pub fn new(roster: Arc<Roster>, region: Option<(Region, PathBuf)>, started: Instant) -> Self {
        Self {
            roster,
            region,
            started,
        }
    }

    /// What the host and its clients hold and did, now.
    pub fn report(&self) -> HostReport {
        let listing = self.roster.listing();
        let usage = self.region.as_ref().map(|(r, _)| r.bulk_usage());
        let queued = self
            .region
            .as_ref()
            .map(|(r, _)| r.queued_requests())
            .unwrap_or_default();
        let region_path = self.region.as_ref().map(|(_, p)| p.display().to_string());
        let mut clients: Vec<ClientReport> = listing
            .members
            .iter()
            .map(|m| {
                let on_region = m.client.via == Via::Region;
                let bulk_blocks = usage
                    .as_ref()
                    .filter(|_| on_region)
                    .and_then(|u| u.by_owner.get(&m.client.id).map(|n| n * u.block_size));
                client_report(
                    m,
                    on_region.then(|| region_path.clone()).flatten(),
                    bulk_blocks.unwrap_or(0),
                    if on_region {
                        queued.get(&m.client.id).copied().unwrap_or(0)
                    } else {
                        0
                    },
                )
            })
            .collect();
        clients.sort_by(|a, b| (a.pid, &a.client).cmp(&(b.pid, &b.client)));
        HostReport {
            version: REPORT_VERSION,
            host_pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            workers: listing.members.len() as u64,
            spares: listing.spares,
            clients_refused: listing.refused,
            region: region_path.zip(usage).map(|(path, u)| RegionReport {
                path,
                bulk_bytes: u.blocks * u.block_size,
                bulk_used_bytes: u.owned * u.block_size,
            }),
            clients,
        }
    }
}

fn path_bytes(row: &[u64; 4]) -> PathBytes {
    PathBytes {
        inline: row[0],
        bulk: row[1],
        stream: row[2],
        zero_copy: row[3],
    }
}

fn client_report(
    m: &Member,
    region: Option<String>,
    bulk_bytes: u64,
    posted_backlog: u64,
) -> ClientReport {
    let snapshot = m.counters.as_ref().and_then(|c| c.snapshot());
    let counted = snapshot.is_some();
    let s = snapshot.unwrap_or_default();
    ClientReport {
        client: m.client.shown(),
        pid: m.client.pid,
        transport: match m.client.via {
            Via::Region => Transport::Region,
            Via::Stream => Transport::Tcp,
        },
        region,
        peer: m.peer.map(|ip| ip.to_string()),
        worker_pid: m.worker_pid,
        age_seconds: m.since.elapsed().as_secs_f64(),
        counted,
        gpu_memory_bytes: s.gauges.memory_bytes,
        contexts: s.gauges.contexts,
        modules: s.gauges.modules,
        streams: s.gauges.streams,
        events: s.gauges.events,
        threads: s.gauges.threads,
        bulk_bytes,
        posted_backlog,
        calls: Calls {
            synchronous: s.synchronous,
            posted: s.posted,
            special: s.special,
        },
        latency: host_report::Histogram {
            buckets: s.latency.to_vec(),
            sum_seconds: s.latency_sum_ns as f64 / 1e9,
        },
        copied: Copied {
            htod: path_bytes(&s.copied[0]),
            dtoh: path_bytes(&s.copied[1]),
        },
        deferred_errors: s.deferred_errors,
        refusals: Refusals {
            memory: s.gauges.memory_refusals,
            contexts: s.gauges.context_refusals,
        },
    }
}
