//! The shared region: creation (host), opening (guest or host worker), channel claims, heartbeats.
//!
//! Split by concern: [`config`] (the layout's parameters), [`file`] (the file or BAR behind it),
//! [`claims`] (channel claims), [`admission`] (the host's clients), [`heartbeat`], [`liveness`] (the checks waits make), [`bulk_access`].

mod admission;
mod bulk_access;
mod claims;
mod config;
pub(crate) mod file;
mod heartbeat;
mod liveness;

pub use admission::Admitted;
pub use claims::ChannelClaim;
pub use config::*;
use file::*;

use crate::bulk::BulkBlock;
use crate::channel::{GuestChannel, HostChannel};
use crate::doorbell::{self, BeatWatch, DoorbellMode};
use crate::error::{GoneReason, TransportError};
use crate::layout::*;
use crate::sys::{self, Mapping};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub(crate) struct Inner {
    pub(crate) map: Mapping,
    pub(crate) layout: Layout,
    pub(crate) mode: DoorbellMode,
    pub(crate) peer_timeout: Duration,
    pub(crate) generation: u64,
    pub(crate) chunk_cap: u64,
    /// Futex mode and same pid namespace as the host: the host's and workers' pids can be checked.
    pub(crate) host_pids_comparable: bool,
    /// Low 32 bits of this process's pid-namespace inode.
    pub(crate) own_pid_ns: u32,
    pending: Mutex<VecDeque<u32>>,
    /// Per channel: `epoch + 1` of the last claim `accept` returned through this handle (0 = none), so a
    /// channel announced twice is handed out once per claim.
    accepted: Vec<AtomicU64>,
    /// Pid that runs this handle's heartbeat thread (0 = none).
    beating_pid: AtomicU32,
    /// Pid that created (hosts) the region through this handle (0 = none).
    host_pid: AtomicU32,
    /// Per channel: `pid << 32 | epoch` of a guest claim made through this handle (0 = none).
    pub(crate) guest_reg: Vec<AtomicU64>,
    /// Per channel: `pid << 32 | epoch` of a serve made through this handle (0 = none).
    pub(crate) server_reg: Vec<AtomicU64>,
    /// This process's identity in the region, as the host granted it (guests only).
    pub(crate) identity: Mutex<GuestIdentity>,
    /// The clients this handle minted, by id (hosts only, `admission.rs`).
    pub(crate) clients: Mutex<std::collections::HashMap<u64, crate::identity::Credential>>,
}

/// What a guest process holds after its first granted claim: the id and credential the host
/// minted for it. Kept per pid: a forked child starts with none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestIdentity {
    pub(crate) pid: u32,
    /// 0: none yet.
    pub(crate) client_id: u64,
    pub(crate) credential: crate::identity::Credential,
    /// The undecided first claim (index, epoch) of this process, if any.
    pub(crate) pending_first: Option<(u32, u32)>,
}

impl GuestIdentity {
    pub(crate) fn none(pid: u32) -> Self {
        GuestIdentity {
            pid,
            client_id: 0,
            credential: crate::identity::Credential::from_bytes(
                [0; crate::identity::CREDENTIAL_LEN],
            ),
            pending_first: None,
        }
    }
}

/// A mapped region, cheap to clone (all clones share the mapping). See the crate docs for the roles.
#[derive(Clone)]
pub struct Region {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("layout", &self.inner.layout)
            .field("mode", &self.inner.mode)
            .finish()
    }
}

impl Region {
    /// Host: creates `path` (or takes an existing file, e.g. a QEMU `memory-backend-file` or tmpfs file
    /// of fixed size, which is never shrunk) and initialises the region in it. Re-creating over a live
    /// region bumps its generation: guests of the old generation get `PeerGone(HostRestarted)`.
    /// Starts this process's heartbeat thread.
    ///
    /// # Errors
    /// `BadConfig`, `TooSmall` (a non-regular file smaller than the layout), `Io`.
    pub fn create(path: impl AsRef<Path>, config: &RegionConfig) -> Result<Region, TransportError> {
        let path = path.as_ref();
        let layout = config.layout()?;
        let file = open_rw(path, true)?;
        let mut size = file_size(&file, path)?;
        if size < layout.capacity {
            let regular = file
                .metadata()
                .map_err(TransportError::io("fstat region"))?
                .file_type()
                .is_file();
            if !regular || is_sysfs_resource(path) {
                return Err(TransportError::TooSmall {
                    needed: layout.capacity,
                    actual: size,
                });
            }
            file.set_len(layout.capacity)
                .map_err(TransportError::io("size region file"))?;
            size = layout.capacity;
        }
        let map = Mapping::map(&file, map_len(size)?).map_err(TransportError::io("mmap region"))?;
        let mut region = Region::from_parts(map, layout, config.doorbell, config.peer_timeout, 0);
        let generation = region.initialise(config);
        if let Some(inner) = Arc::get_mut(&mut region.inner) {
            inner.generation = generation;
            inner.host_pids_comparable = config.doorbell == DoorbellMode::Futex;
        }
        region.inner.host_pid.store(sys::pid(), Ordering::Relaxed);
        region.ensure_heartbeat();
        Ok(region)
    }

    /// Guest, or a host worker process: opens an initialised region and validates its header.
    /// Works on tmpfs files and on ivshmem BAR files (`/sys/bus/pci/devices/…/resource2`), which are
    /// mmapped (never read/written) and never truncated; their size comes from fstat or the sysfs
    /// `resource` table.
    ///
    /// # Errors
    /// `BadMagic`, `LayoutVersion`, `WordSize`, `NotInitialised`, `BadHeader`, `TooSmall`, `Io`.
    pub fn open(path: impl AsRef<Path>) -> Result<Region, TransportError> {
        let path = path.as_ref();
        let file = open_rw(path, false)?;
        let size = file_size(&file, path)?;
        if size < HEADER_SIZE {
            return Err(TransportError::TooSmall {
                needed: HEADER_SIZE,
                actual: size,
            });
        }
        let map = Mapping::map(&file, map_len(size)?).map_err(TransportError::io("mmap region"))?;
        Region::attach(map)
    }

    /// Validates the header of a mapping (shared by `open` and the hostile-header tests).
    pub(crate) fn attach(map: Mapping) -> Result<Region, TransportError> {
        // SAFETY: the mapping holds at least HEADER_SIZE bytes (checked by callers) and is page aligned.
        let h = unsafe { &*map.base().cast::<Header>() };
        let r = Ordering::Relaxed;
        let magic = h.magic.load(r);
        if magic != MAGIC {
            return Err(TransportError::BadMagic {
                found: magic,
                expected: MAGIC,
            });
        }
        let version = h.layout_version.load(r);
        if version != LAYOUT_VERSION {
            return Err(TransportError::LayoutVersion {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let word = h.word_size.load(r);
        if word as usize != std::mem::size_of::<usize>() {
            return Err(TransportError::WordSize {
                found: word,
                expected: std::mem::size_of::<usize>() as u32,
            });
        }
        // SYNC POINT: pairs with the Release store of INIT_READY in `Region::initialise`; every field
        // below was written before it.
        if h.initialised.load(Ordering::Acquire) != INIT_READY {
            return Err(TransportError::NotInitialised);
        }
        let layout = Layout::compute(
            h.channel_count.load(r),
            h.slot_count.load(r),
            h.slot_size.load(r),
            h.bulk_block_size.load(r),
            h.bulk_size.load(r),
        )
        .map_err(TransportError::BadHeader)?;
        let stored = [
            (
                h.block_table_offset.load(r),
                layout.block_table_offset,
                "block_table_offset",
            ),
            (
                h.channels_offset.load(r),
                layout.channels_offset,
                "channels_offset",
            ),
            (
                h.channel_stride.load(r),
                layout.channel_stride,
                "channel_stride",
            ),
            (h.bulk_offset.load(r), layout.bulk_offset, "bulk_offset"),
            (h.capacity.load(r), layout.capacity, "capacity"),
        ];
        if let Some((_, _, field)) = stored.iter().find(|(got, want, _)| got != want) {
            return Err(TransportError::BadHeader(field));
        }
        if layout.capacity > map.len() as u64 {
            return Err(TransportError::TooSmall {
                needed: layout.capacity,
                actual: map.len() as u64,
            });
        }
        let mode = DoorbellMode::from_word(h.doorbell.load(r))
            .ok_or(TransportError::BadHeader("doorbell"))?;
        let timeout_ms = h.peer_timeout_ms.load(r);
        if !(1..=3_600_000).contains(&timeout_ms) {
            return Err(TransportError::BadHeader("peer_timeout_ms"));
        }
        let generation = h.generation.load(r);
        let boot = (u128::from(h.boot_id[1].load(r)) << 64) | u128::from(h.boot_id[0].load(r));
        let mine = sys::boot_id();
        if mode == DoorbellMode::Futex && boot != 0 && mine != 0 && boot != mine {
            return Err(TransportError::ForeignKernel);
        }
        let host_ns = h.host_pid_ns.load(r);
        let mut region = Region::from_parts(
            map,
            layout,
            mode,
            Duration::from_millis(timeout_ms),
            generation,
        );
        if let Some(inner) = Arc::get_mut(&mut region.inner) {
            inner.host_pids_comparable =
                mode == DoorbellMode::Futex && (host_ns == 0 || host_ns == sys::pid_ns());
        }
        Ok(region)
    }

    fn from_parts(
        map: Mapping,
        layout: Layout,
        mode: DoorbellMode,
        peer_timeout: Duration,
        generation: u64,
    ) -> Self {
        let block = u64::from(layout.bulk_block_size);
        // Message chunks: an eighth of the bulk area so several channels stream at once, at most 1 MiB
        // (measured best on 2 cores: large enough to amortise the frame, small enough to pipeline).
        let chunk_cap = (layout.bulk_size / 8).clamp(block, (1 << 20).max(block)) / block * block;
        let n = layout.channel_count as usize;
        Region {
            inner: Arc::new(Inner {
                map,
                layout,
                mode,
                peer_timeout,
                generation,
                chunk_cap,
                host_pids_comparable: false,
                own_pid_ns: sys::pid_ns() as u32,
                pending: Mutex::new(VecDeque::new()),
                accepted: (0..n).map(|_| AtomicU64::new(0)).collect(),
                beating_pid: AtomicU32::new(0),
                host_pid: AtomicU32::new(0),
                guest_reg: (0..n).map(|_| AtomicU64::new(0)).collect(),
                server_reg: (0..n).map(|_| AtomicU64::new(0)).collect(),
                identity: Mutex::new(GuestIdentity::none(0)),
                clients: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// Writes a fresh header and frees every channel and block. Returns the new generation.
    fn initialise(&self, config: &RegionConfig) -> u64 {
        let l = &self.inner.layout;
        let h = self.header();
        let r = Ordering::Relaxed;
        let old_generation =
            if h.magic.load(r) == MAGIC && h.layout_version.load(r) == LAYOUT_VERSION {
                h.generation.load(r)
            } else {
                0
            };
        // SYNC POINT: a guest opening concurrently sees INIT_BUSY (Acquire load in `attach`) and refuses.
        h.initialised.store(INIT_BUSY, Ordering::Release);
        h.magic.store(MAGIC, r);
        h.layout_version.store(LAYOUT_VERSION, r);
        h.word_size.store(std::mem::size_of::<usize>() as u32, r);
        h.capacity.store(l.capacity, r);
        h.doorbell.store(config.doorbell as u32, r);
        h.channel_count.store(l.channel_count, r);
        h.slot_count.store(l.slot_count, r);
        h.slot_size.store(l.slot_size, r);
        h.bulk_block_size.store(l.bulk_block_size, r);
        h.bulk_size.store(l.bulk_size, r);
        h.block_table_offset.store(l.block_table_offset, r);
        h.channels_offset.store(l.channels_offset, r);
        h.channel_stride.store(l.channel_stride, r);
        h.bulk_offset.store(l.bulk_offset, r);
        h.peer_timeout_ms
            .store(config.peer_timeout.as_millis().max(1) as u64, r);
        h.host_pid.store(sys::pid(), r);
        h.host_start_time.store(sys::start_time(sys::pid()), r);
        h.host_beat.store(0, r);
        let boot = sys::boot_id();
        h.boot_id[0].store(boot as u64, r);
        h.boot_id[1].store((boot >> 64) as u64, r);
        h.host_pid_ns.store(sys::pid_ns(), r);
        h._reserved2.store(0, r);
        h.claim_seq.store(0, r);
        h.accept_waiting.store(0, r);
        h.bulk_hint.store(0, r);
        for w in &h.claim_bits {
            w.store(0, r);
        }
        for owner in self.block_table() {
            owner.store(0, r);
        }
        for i in 0..l.channel_count {
            let c = self.channel(i);
            let m = &c.meta.0;
            m.status.store(status(0, STATE_FREE), r);
            m.presented_id.store(0, r);
            m.owner_pid.store(0, r);
            m.owner_tid.store(0, r);
            m.owner_start.store(0, r);
            m.guest_beat.store(0, r);
            m.server_pid.store(0, r);
            m.owner_pid_ns.store(0, r);
            m.server_start.store(0, r);
            m.server_beat.store(0, r);
            c.identity.0.clear();
            c.request.reset();
            c.response.reset();
        }
        let generation = old_generation.wrapping_add(1).max(1);
        h.generation.store(generation, r);
        // SYNC POINT: pairs with the Acquire load of `initialised` in `Region::attach`.
        h.initialised.store(INIT_READY, Ordering::Release);
        generation
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: offset 0 of a mapping of at least HEADER_SIZE bytes (checked at create/open), page aligned;
        // every field is an atomic, so shared access from other processes is not a data race.
        unsafe { &*self.inner.map.base().cast::<Header>() }
    }

    /// Channel `index`'s control block. Panics (a bug in this crate, never peer input) if out of range.
    pub(crate) fn channel(&self, index: u32) -> &ChannelControl {
        assert!(
            index < self.inner.layout.channel_count,
            "channel index out of range"
        );
        let off = self.inner.layout.channel_offset(index) as usize;
        // SAFETY: the layout was validated to fit in the mapping; `off` is page aligned; all fields atomic.
        unsafe { &*self.inner.map.base().add(off).cast::<ChannelControl>() }
    }

    pub(crate) fn block_table(&self) -> &[AtomicU64] {
        let l = &self.inner.layout;
        // SAFETY: the table lies inside the validated layout, 8-byte aligned, and holds `blocks()` words.
        unsafe {
            std::slice::from_raw_parts(
                self.inner
                    .map
                    .base()
                    .add(l.block_table_offset as usize)
                    .cast::<AtomicU64>(),
                l.blocks() as usize,
            )
        }
    }

    /// The sequence word of slot `slot` of the request (`response == false`) or response ring of
    /// channel `index`. Panics (a bug in this crate, never peer input) if out of range.
    pub(crate) fn slot_seq(&self, index: u32, response: bool, slot: u32) -> &AtomicU64 {
        let l = &self.inner.layout;
        assert!(slot < l.slot_count, "slot index out of range");
        let off = l.slot_offset(index, response, slot) + FRAME_SEQ_OFFSET as u64;
        let p = self.ptr_at(off, 8);
        // SAFETY: inside the mapping (ptr_at); slots start at multiples of 64 from a page-aligned
        // channel, so `+ 24` is 8-aligned; both sides access this word only atomically (frames are
        // copied around it), so sharing it with the peer is not a data race.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// Resets channel `index`'s rings for a new claim: counters, sleep flags and every slot's sequence
    /// word (so no word left by an earlier user can read as published). Relaxed stores: the caller
    /// publishes them with the Release store of CLAIMED.
    fn reset_rings(&self, index: u32) {
        let c = self.channel(index);
        c.request.reset();
        c.response.reset();
        for response in [false, true] {
            for slot in 0..self.inner.layout.slot_count {
                // SYNC POINT: ordered for the server by the Release store of CLAIMED in `connect`
                // (its Acquire load in `serve`); the guest's own reads are program-ordered.
                self.slot_seq(index, response, slot)
                    .store(0, Ordering::Relaxed);
            }
        }
    }

    /// Pointer to byte `off` of the region; `off + len` must lie inside the validated layout.
    pub(crate) fn ptr_at(&self, off: u64, len: u64) -> *mut u8 {
        assert!(
            off.checked_add(len)
                .is_some_and(|end| end <= self.inner.layout.capacity),
            "region bounds"
        );
        // SAFETY: just checked to lie inside the mapping (capacity ≤ mapping length).
        unsafe { self.inner.map.base().add(off as usize) }
    }

    /// The doorbell mode stored in the header.
    pub fn doorbell_mode(&self) -> DoorbellMode {
        self.inner.mode
    }

    /// The liveness bound stored in the header.
    pub fn peer_timeout(&self) -> Duration {
        self.inner.peer_timeout
    }

    /// Number of channels.
    pub fn channel_count(&self) -> u32 {
        self.inner.layout.channel_count
    }

    /// Bytes of the bulk area.
    pub fn bulk_size(&self) -> u64 {
        self.inner.layout.bulk_size
    }

    /// Host generation this handle was opened against.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The client id the host granted this process in this region (0 before its first granted
    /// claim, and in a forked child until it claims a channel of its own): the owner of its bulk
    /// blocks.
    pub fn client_id(&self) -> u64 {
        let identity = self
            .inner
            .identity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if identity.pid == sys::pid() {
            identity.client_id
        } else {
            0
        }
    }
}
