//! What a region holds right now, for statistics (`vgpu-host --metrics`): how much of the bulk
//! area is owned, how many request frames wait in each client's rings, and how large a message
//! travels inline. Every load here is a snapshot that may be stale by the time it is returned;
//! nothing is decided on it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::layout::{status_parts, STATE_CLAIMED};
use crate::region::Region;

/// How much of a region's bulk area is owned at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkUsage {
    /// Bytes of one block.
    pub block_size: u64,
    /// Blocks of the area.
    pub blocks: u64,
    /// Blocks owned (by messages in flight or clients' zero-copy memory).
    pub owned: u64,
    /// Blocks owned per owner (a client token).
    pub by_owner: HashMap<u64, u64>,
}

impl Region {
    /// The largest message that travels in one ring slot; longer ones go through the bulk area
    /// (while it has room).
    pub fn inline_payload(&self) -> usize {
        self.inner.layout.slot_payload()
    }

    /// How much of the bulk area is owned now.
    pub fn bulk_usage(&self) -> BulkUsage {
        let mut by_owner = HashMap::new();
        for word in self.block_table() {
            // SYNC POINT: none needed: a statistic; pairs with nothing (the owners' CASes in
            // `bulk::alloc`/`free` order the blocks' bytes, which are not read here).
            let owner = word.load(Ordering::Relaxed);
            if owner != 0 {
                *by_owner.entry(owner).or_insert(0) += 1;
            }
        }
        BulkUsage {
            block_size: u64::from(self.inner.layout.bulk_block_size),
            blocks: self.inner.layout.blocks(),
            owned: by_owner.values().sum(),
            by_owner,
        }
    }

    /// Request frames published and not yet taken by the host, summed per client id (as granted), over
    /// the claimed channels. A ring whose counters look impossible (a lagging `head`, a hostile
    /// guest) counts 0.
    pub fn queued_requests(&self) -> HashMap<u64, u64> {
        let slots = self.inner.layout.slot_count;
        let mut queued = HashMap::new();
        for index in 0..self.inner.layout.channel_count {
            let c = self.channel(index);
            // SYNC POINT: none needed: a statistic; a claim seen half made only mislabels one
            // sample (the Release store of CLAIMED in `connect` orders the identity for `serve`).
            let (_, state) = status_parts(c.meta.0.status.load(Ordering::Relaxed));
            if state != STATE_CLAIMED {
                continue;
            }
            // SYNC POINT: none needed: a statistic; the id the host granted the claim (a guest may
            // overwrite it, which only mislabels its own tenant's figures).
            let token = c.identity.0.client_id.load(Ordering::Relaxed);
            // SYNC POINT: none needed: statistics of the request ring's counters (their
            // partners are the ring's own Release/Acquire pairs, see `ring.rs`).
            let head = c.request.head.0.load(Ordering::Relaxed);
            // SYNC POINT: as above.
            let tail = c.request.tail.0.load(Ordering::Relaxed);
            let waiting = head.wrapping_sub(tail);
            let waiting = if waiting <= slots { waiting } else { 0 };
            *queued.entry(token).or_insert(0) += u64::from(waiting);
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use crate::{Region, RegionConfig};
    use std::time::Duration;

    #[test]
    fn usage_counts_owned_blocks_and_queued_requests() {
        let path = format!("/dev/shm/vgpu-usage-test-{}", std::process::id());
        let config = RegionConfig {
            channel_count: 2,
            bulk_size: 1 << 20,
            ..RegionConfig::default()
        };
        let host = Region::create(&path, &config).expect("create");
        assert_eq!(host.inline_payload(), 4096 - crate::FRAME_HEADER_SIZE);
        let before = host.bulk_usage();
        assert_eq!(before.owned, 0);
        assert_eq!(before.blocks * before.block_size, 1 << 20);
        let block = host.bulk_alloc(100_000, 7).expect("alloc");
        let usage = host.bulk_usage();
        assert_eq!(usage.owned, 2);
        assert_eq!(usage.by_owner.get(&7), Some(&2));

        let guest = Region::open(&path).expect("open");
        let mut channel = guest.connect().expect("connect");
        let claim = host
            .accept(Duration::from_secs(1))
            .expect("accept")
            .expect("a claim");
        let claim = host.admit(claim).expect("admit");
        host.grant(&claim.claim, claim.credential.as_ref())
            .expect("grant");
        let claim = claim.claim;
        assert!(host.queued_requests().values().all(|&n| n == 0));
        channel.post(b"one").expect("post");
        channel.post(b"two").expect("post");
        assert_eq!(host.queued_requests().get(&claim.client_id), Some(&2));
        let mut served = host.serve(&claim).expect("serve");
        let mut request = Vec::new();
        served.recv(&mut request).expect("recv");
        assert_eq!(host.queued_requests().get(&claim.client_id), Some(&1));
        host.bulk_free(block).expect("free");
        drop(channel);
        drop(served);
        std::fs::remove_file(&path).ok();
    }
}
