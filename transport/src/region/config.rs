//! How a region is laid out: [`RegionConfig`], its defaults and bounds.

use super::*;

/// Sizing and behaviour of a region, chosen by the host when it creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// Number of channels (one per guest thread that calls), 1..=1024.
    pub channel_count: u32,
    /// Slots per ring, a power of two in 2..=1024. More slots let more frames be in flight.
    pub slot_count: u32,
    /// Bytes per slot including the 32-byte frame header, a multiple of 64 in 128..=1 MiB.
    pub slot_size: u32,
    /// Bytes of the bulk area, a multiple of `bulk_block_size`.
    pub bulk_size: u64,
    /// Allocation granularity of the bulk area, a power of two ≥ 4096.
    pub bulk_block_size: u32,
    /// How waiters sleep.
    pub doorbell: DoorbellMode,
    /// How long a peer may show no sign of life before calls fail with `PeerGone`
    /// ([`MIN_PEER_TIMEOUT`]..=[`MAX_PEER_TIMEOUT`], default [`DEFAULT_PEER_TIMEOUT`]).
    pub peer_timeout: Duration,
}

/// The default [`RegionConfig::peer_timeout`]: how long a peer may show no sign of life.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest [`RegionConfig::peer_timeout`] a region accepts.
pub const MIN_PEER_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest [`RegionConfig::peer_timeout`] a region accepts.
pub const MAX_PEER_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            channel_count: 64,
            slot_count: 8,
            slot_size: 4096,
            bulk_size: 64 << 20,
            bulk_block_size: 64 << 10,
            doorbell: DoorbellMode::Futex,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
        }
    }
}

impl RegionConfig {
    /// Bytes a region with this config needs.
    ///
    /// # Errors
    /// [`TransportError::BadConfig`] when a field is out of range.
    pub fn required_size(&self) -> Result<u64, TransportError> {
        Ok(self.layout()?.capacity)
    }

    /// Grows (or shrinks) `bulk_size` so the whole region fills exactly `file_size` bytes, e.g. the fixed
    /// power-of-two size of a QEMU `memory-backend-file` / ivshmem BAR.
    ///
    /// # Errors
    /// [`TransportError::TooSmall`] when not even one bulk block fits next to the channels.
    pub fn fit_to(mut self, file_size: u64) -> Result<Self, TransportError> {
        let block = u64::from(self.bulk_block_size);
        self.bulk_size = block;
        let fixed = self.layout()?.capacity - block;
        let mut bulk = file_size.saturating_sub(fixed) / block * block;
        // The block table grows with the bulk area; shrink until everything fits.
        while bulk >= block {
            self.bulk_size = bulk;
            if self.layout()?.capacity <= file_size {
                return Ok(self);
            }
            bulk -= block;
        }
        Err(TransportError::TooSmall {
            needed: fixed + block,
            actual: file_size,
        })
    }

    pub(super) fn layout(&self) -> Result<Layout, TransportError> {
        if !(MIN_PEER_TIMEOUT..=MAX_PEER_TIMEOUT).contains(&self.peer_timeout) {
            return Err(TransportError::BadConfig("peer_timeout"));
        }
        Layout::compute(
            self.channel_count,
            self.slot_count,
            self.slot_size,
            self.bulk_block_size,
            self.bulk_size,
        )
        .map_err(TransportError::BadConfig)
    }
}
