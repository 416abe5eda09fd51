//! `#[repr(C)]` structures of the region and the arithmetic that places them.
//!
//! Every field of the header and of a channel's control block is an atomic, so that reading what another
//! process (possibly hostile) writes is never a data race; the layout values are read once at open time,
//! validated, and cached in process memory, so later corruption cannot move our bounds.

use crate::ring::{Line, RingControl};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `"VGPUSHM1"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VGPUSHM1");
/// Bumped whenever any offset or field meaning below changes (2: the slot sequence word at offset 24
/// of each frame header; 3: host-assigned client identities, the channel's identity line).
pub const LAYOUT_VERSION: u32 = 3;
/// Bytes reserved for the header at offset 0.
pub const HEADER_SIZE: u64 = 4096;
/// Upper bound on channels (the claim bitmap has this many bits).
pub const MAX_CHANNELS: u32 = 1024;
/// Bytes at the start of each slot holding the frame header (kind, length, bulk offset and length,
/// sequence word).
pub const FRAME_HEADER_SIZE: usize = 32;
/// Offset of the slot's sequence word (an atomic `u64`, see `ring::slot_seq`) in the frame header; the
/// header's plain bytes are the ones before it.
pub(crate) const FRAME_SEQ_OFFSET: usize = 24;
/// Page granularity of the layout.
pub const PAGE: u64 = 4096;

/// `Header::initialised` values (0 = never initialised).
pub(crate) const INIT_BUSY: u32 = 1;
pub(crate) const INIT_READY: u32 = 2;

/// Channel states (low 32 bits of `ChannelMeta::status`; the high 32 bits are the claim epoch).
pub(crate) const STATE_FREE: u32 = 0;
pub(crate) const STATE_CLAIMING: u32 = 1;
pub(crate) const STATE_CLAIMED: u32 = 2;
pub(crate) const STATE_CLOSED: u32 = 3;

pub(crate) fn status(epoch: u32, state: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(state)
}
pub(crate) fn status_parts(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Region header at offset 0 (see docs/transport.md for the table).
#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) layout_version: AtomicU32,
    pub(crate) word_size: AtomicU32,
    pub(crate) capacity: AtomicU64,
    pub(crate) initialised: AtomicU32,
    pub(crate) doorbell: AtomicU32,
    pub(crate) channel_count: AtomicU32,
    pub(crate) slot_count: AtomicU32,
    pub(crate) slot_size: AtomicU32,
    pub(crate) bulk_block_size: AtomicU32,
    pub(crate) bulk_size: AtomicU64,
    pub(crate) block_table_offset: AtomicU64,
    pub(crate) channels_offset: AtomicU64,
    pub(crate) channel_stride: AtomicU64,
    pub(crate) bulk_offset: AtomicU64,
    pub(crate) peer_timeout_ms: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) host_pid: AtomicU32,
    pub(crate) _reserved0: AtomicU32,
    pub(crate) host_start_time: AtomicU64,
    pub(crate) host_beat: AtomicU64,
    /// Unused since layout 3 (was `next_client_token`, a counter guests drew their tokens from).
    pub(crate) _reserved2: AtomicU64,
    pub(crate) claim_seq: AtomicU32,
    pub(crate) accept_waiting: AtomicU32,
    pub(crate) bulk_hint: AtomicU32,
    pub(crate) _reserved1: AtomicU32,
    pub(crate) claim_bits: [AtomicU64; (MAX_CHANNELS / 64) as usize],
    /// Kernel boot id of the creating host (`/proc/sys/kernel/random/boot_id`; 0 = unknown).
    pub(crate) boot_id: [AtomicU64; 2],
    /// Pid-namespace inode of the creating host (`/proc/self/ns/pid`; 0 = unknown).
    pub(crate) host_pid_ns: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() as u64 <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<Header>() == 304);

/// Identity and liveness words of one channel.
#[repr(C)]
pub(crate) struct ChannelMeta {
    pub(crate) status: AtomicU64,
    /// The client id the guest presents (0: a process's first claim); proved by `ChannelIdentity::proof`.
    pub(crate) presented_id: AtomicU64,
    pub(crate) owner_pid: AtomicU32,
    pub(crate) owner_tid: AtomicU32,
    pub(crate) owner_start: AtomicU64,
    pub(crate) guest_beat: AtomicU64,
    pub(crate) server_pid: AtomicU32,
    /// Low 32 bits of the guest's pid-namespace inode (0 = unknown): pids are compared only within one.
    pub(crate) owner_pid_ns: AtomicU32,
    pub(crate) server_start: AtomicU64,
    pub(crate) server_beat: AtomicU64,
}

/// The host's verdict on a claim (`ChannelIdentity::verdict`, low byte; the claim's epoch is in
/// the upper 24 bits, so a verdict meant for an earlier claim of the channel never matches).
pub(crate) const VERDICT_PENDING: u32 = 0;
pub(crate) const VERDICT_GRANTED: u32 = 1;
pub(crate) const VERDICT_UNKNOWN_IDENTITY: u32 = 2;
pub(crate) const VERDICT_LIMIT: u32 = 3;
/// Set by a guest that stopped waiting for the verdict (the host's grant then fails).
pub(crate) const VERDICT_ABANDONED: u32 = 4;

pub(crate) fn verdict(epoch: u32, code: u32) -> u32 {
    (epoch << 8) | (code & 0xff)
}

/// Identity words of one claim: the guest's proof, and what the host assigns (issue 11).
#[repr(C)]
pub(crate) struct ChannelIdentity {
    /// Guest: `identity::claim_proof` of its credential for this claim (0 for a first claim).
    pub(crate) proof: [AtomicU64; 2],
    /// Host: the client id the claim was granted to.
    pub(crate) client_id: AtomicU64,
    /// Host: `verdict(epoch, VERDICT_*)`; the guest futex-waits on it after claiming.
    pub(crate) verdict: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    /// Host: the new client's credential, on its first claim only; the guest wipes it once read.
    pub(crate) credential: [AtomicU64; 2],
}

impl ChannelIdentity {
    /// Every word to 0 (Relaxed: published by the Release store that follows, of `initialised`
    /// or of CLAIMED).
    pub(crate) fn clear(&self) {
        let r = std::sync::atomic::Ordering::Relaxed;
        // SYNC POINT: published by the caller's Release store (see above).
        for w in self.proof.iter().chain(&self.credential) {
            w.store(0, r);
        }
        self.client_id.store(0, r);
        self.verdict.store(0, r);
    }
}

/// Control block at the start of each channel; slots follow it.
#[repr(C)]
pub(crate) struct ChannelControl {
    pub(crate) meta: Line<ChannelMeta>,
    pub(crate) identity: Line<ChannelIdentity>,
    pub(crate) request: RingControl,
    pub(crate) response: RingControl,
}

/// Bytes of the channel control block (slots start right after it).
pub(crate) const CHANNEL_CONTROL_SIZE: u64 = std::mem::size_of::<ChannelControl>() as u64;
const _: () = assert!(CHANNEL_CONTROL_SIZE == 640);

/// Frame kinds (low byte of `FrameHeader::kind`).
pub(crate) const FRAME_INLINE: u32 = 1;
pub(crate) const FRAME_BULK: u32 = 2;
/// Set on the last frame of a message.
pub(crate) const FRAME_LAST: u32 = 0x100;

/// Header at the start of each slot (its plain bytes, `FRAME_SEQ_OFFSET` of them; the sequence word
/// after them is only ever accessed atomically); copied out then validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) kind: u32,
    pub(crate) len: u32,
    pub(crate) bulk_offset: u64,
    pub(crate) bulk_len: u64,
}

impl FrameHeader {
    pub(crate) fn encode(&self) -> [u8; FRAME_SEQ_OFFSET] {
        let mut b = [0u8; FRAME_SEQ_OFFSET];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.bulk_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.bulk_len.to_le_bytes());
        b
    }
    pub(crate) fn decode(b: &[u8; FRAME_SEQ_OFFSET]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        FrameHeader {
            kind: u32_at(0),
            len: u32_at(4),
            bulk_offset: u64_at(8),
            bulk_len: u64_at(16),
        }
    }
}

/// Placement of everything in the region, computed from the sizing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) channel_count: u32,
    pub(crate) slot_count: u32,
    pub(crate) slot_size: u32,
    pub(crate) bulk_block_size: u32,
    pub(crate) bulk_size: u64,
    pub(crate) block_table_offset: u64,
    pub(crate) channels_offset: u64,
    pub(crate) channel_stride: u64,
    pub(crate) bulk_offset: u64,
    pub(crate) capacity: u64,
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Layout {
    /// Places the region; every bound is checked so hostile header values give an error.
    pub(crate) fn compute(
        channel_count: u32,
        slot_count: u32,
        slot_size: u32,
        bulk_block_size: u32,
        bulk_size: u64,
    ) -> Result<Layout, &'static str> {
        if channel_count == 0 || channel_count > MAX_CHANNELS {
            return Err("channel_count");
        }
        if !slot_count.is_power_of_two() || !(2..=1024).contains(&slot_count) {
            return Err("slot_count");
        }
        if slot_size & 63 != 0 || !(128..=(1 << 20)).contains(&slot_size) {
            return Err("slot_size");
        }
        if !bulk_block_size.is_power_of_two()
            || !(PAGE as u32..=(1 << 26)).contains(&bulk_block_size)
        {
            return Err("bulk_block_size");
        }
        if bulk_size == 0
            || bulk_size & (u64::from(bulk_block_size) - 1) != 0
            || bulk_size > (1 << 40)
        {
            return Err("bulk_size");
        }
        let blocks = bulk_size / u64::from(bulk_block_size);
        let block_table_offset = HEADER_SIZE;
        let table_bytes = round_up(blocks * 8, PAGE).ok_or("bulk_size")?;
        let channels_offset = block_table_offset + table_bytes;
        let ring_bytes = u64::from(slot_count) * u64::from(slot_size);
        let channel_stride =
            round_up(CHANNEL_CONTROL_SIZE + 2 * ring_bytes, PAGE).ok_or("slot_size")?;
        let bulk_offset = u64::from(channel_count)
            .checked_mul(channel_stride)
            .and_then(|c| c.checked_add(channels_offset))
            .and_then(|b| round_up(b, PAGE))
            .ok_or("channel_count")?;
        let capacity = bulk_offset.checked_add(bulk_size).ok_or("bulk_size")?;
        Ok(Layout {
            channel_count,
            slot_count,
            slot_size,
            bulk_block_size,
            bulk_size,
            block_table_offset,
            channels_offset,
            channel_stride,
            bulk_offset,
            capacity,
        })
    }

    /// Number of bulk blocks.
    pub(crate) fn blocks(&self) -> u64 {
        self.bulk_size / u64::from(self.bulk_block_size)
    }

    /// Payload bytes of one slot.
    pub(crate) fn slot_payload(&self) -> usize {
        self.slot_size as usize - FRAME_HEADER_SIZE
    }

    /// Offset of channel `index`'s control block.
    pub(crate) fn channel_offset(&self, index: u32) -> u64 {
        debug_assert!(index < self.channel_count);
        self.channels_offset + u64::from(index) * self.channel_stride
    }

    /// Offset of slot `slot` of the request (`response == false`) or response ring of channel `index`.
    pub(crate) fn slot_offset(&self, index: u32, response: bool, slot: u32) -> u64 {
        debug_assert!(slot < self.slot_count);
        let ring = u64::from(self.slot_count) * u64::from(self.slot_size);
        self.channel_offset(index)
            + CHANNEL_CONTROL_SIZE
            + if response { ring } else { 0 }
            + u64::from(slot) * u64::from(self.slot_size)
    }
}
