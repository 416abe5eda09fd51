//! The shared region: creation (host), opening (guest or host worker), channel claims, heartbeats.

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

    fn layout(&self) -> Result<Layout, TransportError> {
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

/// Who a claimed channel belongs to, as the host learns it from [`Region::accept`]. Plain data: the host
/// main process may hand it to a worker process, which then calls [`Region::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelClaim {
    /// Channel index in the region.
    pub index: u32,
    /// Claim epoch (bumped on every claim of this index; stale claims are refused).
    pub epoch: u32,
    /// Unique per guest process (per region); group channels by it to find one client's threads.
    pub client_token: u64,
    /// Guest process id (in the guest's kernel).
    pub pid: u32,
    /// Guest thread id (in the guest's kernel).
    pub tid: u32,
    /// Guest process start time (clock ticks since the guest kernel booted, 0 if unknown).
    pub start_time: u64,
}

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
    /// `(pid, token)` of this process's client token.
    token: Mutex<(u32, u64)>,
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

fn file_size(file: &File, path: &Path) -> Result<u64, TransportError> {
    let meta = file
        .metadata()
        .map_err(TransportError::io("fstat region"))?;
    if meta.len() != 0 || meta.file_type().is_file() && !is_sysfs_resource(path) {
        return Ok(meta.len());
    }
    Ok(sysfs_bar_size(path).unwrap_or(0))
}

fn is_sysfs_resource(path: &Path) -> bool {
    path.starts_with("/sys/")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("resource"))
}

/// Size of PCI BAR N from the sibling `resource` file (`start end flags` per line) when fstat says 0.
pub(crate) fn sysfs_bar_size(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let bar: usize = name
        .strip_prefix("resource")?
        .split('_')
        .next()?
        .parse()
        .ok()?;
    let table = std::fs::read_to_string(path.with_file_name("resource")).ok()?;
    let mut cols = table.lines().nth(bar)?.split_ascii_whitespace();
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let start = parse(cols.next()?)?;
    let end = parse(cols.next()?)?;
    (end > start).then(|| end - start + 1)
}

fn open_rw(path: &Path, create: bool) -> Result<File, TransportError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o660)
        .open(path)
        .map_err(TransportError::io("open region file"))
}

fn map_len(size: u64) -> Result<usize, TransportError> {
    usize::try_from(size).map_err(|_| TransportError::BadHeader("capacity"))
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
                token: Mutex::new((0, 0)),
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
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        h.next_client_token.store((seed << 16) | 1, r);
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
            m.client_token.store(0, r);
            m.owner_pid.store(0, r);
            m.owner_tid.store(0, r);
            m.owner_start.store(0, r);
            m.guest_beat.store(0, r);
            m.server_pid.store(0, r);
            m.owner_pid_ns.store(0, r);
            m.server_start.store(0, r);
            m.server_beat.store(0, r);
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

    /// This process's client token (unique per guest process per region; a forked child gets its own).
    pub fn client_token(&self) -> u64 {
        let me = sys::pid();
        let mut t = self.inner.token.lock().unwrap_or_else(|e| e.into_inner());
        if t.0 != me || t.1 == 0 {
            // SYNC POINT: RMW on the header counter; no data depends on it, uniqueness is all.
            let token = self
                .header()
                .next_client_token
                .fetch_add(1, Ordering::Relaxed);
            *t = (me, token.max(1));
        }
        t.1
    }

    /// Starts (once per process and handle) the thread that bumps the heartbeat words this process owns:
    /// the host word if it created the region, `guest_beat` of channels it claimed, `server_beat` of
    /// channels it serves. Never called before the first `connect`/`serve`/`create`.
    pub(crate) fn ensure_heartbeat(&self) {
        let me = sys::pid();
        if self.inner.beating_pid.swap(me, Ordering::AcqRel) == me {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = (self.inner.peer_timeout / 10)
            .clamp(Duration::from_millis(1), Duration::from_millis(500));
        let spawned = std::thread::Builder::new()
            .name("vgpu-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(inner) = weak.upgrade() else { return };
                Region { inner }.beat(me);
            });
        if spawned.is_err() {
            self.inner.beating_pid.store(0, Ordering::Release);
        }
    }

    fn beat(&self, me: u32) {
        let r = Ordering::Relaxed;
        if self.inner.host_pid.load(r) == me {
            // SYNC POINT: read (Relaxed) by guests' liveness checks; only its change matters.
            self.header().host_beat.fetch_add(1, r);
        }
        for i in 0..self.inner.layout.channel_count {
            let m = &self.channel(i).meta.0;
            let (epoch, _) = status_parts(m.status.load(r));
            let mine = (u64::from(me) << 32) | u64::from(epoch);
            if self.inner.guest_reg[i as usize].load(r) == mine {
                // SYNC POINT: read (Relaxed) by the serving host's liveness check; only its change matters.
                m.guest_beat.fetch_add(1, r);
            }
            if self.inner.server_reg[i as usize].load(r) == mine {
                // SYNC POINT: read (Relaxed) by the guest's liveness check; only its change matters.
                m.server_beat.fetch_add(1, r);
            }
        }
    }

    /// Guest: claims a free channel (or one left by a dead process) for the calling thread. The channel
    /// is released when the returned value drops. Starts the heartbeat thread on first use.
    ///
    /// # Errors
    /// `NoFreeChannel` when all channels belong to live processes; `PeerGone(HostRestarted)` when the host
    /// re-initialised the region since it was opened.
    pub fn connect(&self) -> Result<GuestChannel, TransportError> {
        let h = self.header();
        if h.generation.load(Ordering::Acquire) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        let me = sys::pid();
        let token = self.client_token();
        let count = self.inner.layout.channel_count;
        let first = sys::tid() % count;
        for k in 0..count {
            let index = (first + k) % count;
            let m = &self.channel(index).meta.0;
            // SYNC POINT: pairs with the Release stores of `status` in `connect`, `GuestChannel::drop` and
            // `HostChannel::drop`.
            let word = m.status.load(Ordering::Acquire);
            let (epoch, state) = status_parts(word);
            let stale = match state {
                STATE_FREE => true,
                STATE_CLAIMED | STATE_CLOSED | STATE_CLAIMING => {
                    // Pids are only comparable within one pid namespace (all guests of a VM share
                    // the guest kernel's).
                    let pid = m.owner_pid.load(Ordering::Relaxed);
                    pid != 0
                        && pid != me
                        && m.owner_pid_ns.load(Ordering::Relaxed) == self.inner.own_pid_ns
                        && !sys::process_alive(pid, m.owner_start.load(Ordering::Relaxed))
                }
                _ => true,
            };
            if !stale {
                continue;
            }
            let epoch = epoch.wrapping_add(1);
            // SYNC POINT: Acquire pairs with the Release store that freed the channel (the previous users
            // are done with its rings); the CAS makes us the only claimer.
            if m.status
                .compare_exchange(
                    word,
                    status(epoch, STATE_CLAIMING),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let r = Ordering::Relaxed;
            m.owner_pid.store(me, r);
            m.owner_tid.store(sys::tid(), r);
            m.owner_start.store(sys::start_time(me), r);
            m.owner_pid_ns.store(self.inner.own_pid_ns, r);
            m.client_token.store(token, r);
            m.guest_beat.store(0, r);
            m.server_pid.store(0, r);
            m.server_start.store(0, r);
            m.server_beat.store(0, r);
            self.reset_rings(index);
            self.inner.guest_reg[index as usize].store((u64::from(me) << 32) | u64::from(epoch), r);
            // SYNC POINT: pairs with the Acquire loads of `status` in `accept`/`serve`: the identity
            // fields and ring resets above are visible to whoever sees CLAIMED.
            m.status
                .store(status(epoch, STATE_CLAIMED), Ordering::Release);
            self.announce_claim(index);
            self.ensure_heartbeat();
            return Ok(GuestChannel::new(self.clone(), index, epoch, token));
        }
        Err(TransportError::NoFreeChannel)
    }

    fn announce_claim(&self, index: u32) {
        let h = self.header();
        crate::claim::announce(&h.claim_bits, &h.claim_seq, index);
        // SYNC POINT: pairs with the SeqCst fence in `accept` after setting `accept_waiting` (Dekker).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.inner.mode == DoorbellMode::Futex && h.accept_waiting.load(Ordering::Relaxed) != 0 {
            sys::futex_wake(&h.claim_seq);
        }
    }

    /// Host main process: waits up to `timeout` for a newly claimed channel. Sleeps on the header's claim
    /// doorbell (futex or back-off per the region's mode); no scanning of all channels in a loop.
    ///
    /// # Errors
    /// `PeerGone(RegionTruncated)` once a guest shrank the region file under this process
    /// ([`Region::check_mapped`]).
    pub fn accept(&self, timeout: Duration) -> Result<Option<ChannelClaim>, TransportError> {
        self.check_mapped()?;
        let deadline = Instant::now() + timeout;
        let h = self.header();
        let count = self.inner.layout.channel_count;
        let mut nap = Duration::from_micros(50);
        loop {
            let next = self
                .inner
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if let Some(index) = next {
                let seen = &self.inner.accepted[index as usize];
                if let Some(claim) = self.claim_of(index) {
                    if seen.swap(u64::from(claim.epoch) + 1, Ordering::Relaxed)
                        != u64::from(claim.epoch) + 1
                    {
                        return Ok(Some(claim));
                    }
                    continue;
                }
                self.free_if_closed_unserved(index, seen.load(Ordering::Relaxed));
                continue;
            }
            // SYNC POINT: pairs with the Release fetch_add of `claim_seq` in `claim::announce`.
            let seq = h.claim_seq.load(Ordering::Acquire);
            let mut found = Vec::new();
            crate::claim::take(&h.claim_bits, count, &mut found);
            if !found.is_empty() {
                self.inner
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(found);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let left = deadline - now;
            match self.inner.mode {
                DoorbellMode::Futex => {
                    h.accept_waiting.fetch_add(1, Ordering::Relaxed);
                    // SYNC POINT: pairs with the SeqCst fence in `announce_claim`.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if h.claim_seq.load(Ordering::Relaxed) == seq {
                        sys::futex_wait(&h.claim_seq, seq, left.min(doorbell::LIVENESS_EVERY * 10));
                    }
                    h.accept_waiting.fetch_sub(1, Ordering::Relaxed);
                }
                DoorbellMode::Poll => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// A channel announced but already CLOSED when `accept` took it, and whose claim `accept` never
    /// handed out (`accepted` is `epoch + 1` of the last one handed out), was never served, so nobody
    /// else will free it: free it here.
    fn free_if_closed_unserved(&self, index: u32, accepted: u64) {
        let m = &self.channel(index).meta.0;
        // SYNC POINT: Acquire pairs with the Release CAS to CLOSED in `GuestChannel::drop`.
        let word = m.status.load(Ordering::Acquire);
        let (epoch, state) = status_parts(word);
        if state == STATE_CLOSED && accepted != u64::from(epoch) + 1 {
            // SYNC POINT: Release pairs with the Acquire CAS of `status` in `connect`.
            let _ = m.status.compare_exchange(
                word,
                status(epoch, STATE_FREE),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }

    /// The claim currently held on channel `index`, if it is claimed.
    pub fn claim_of(&self, index: u32) -> Option<ChannelClaim> {
        if index >= self.inner.layout.channel_count {
            return None;
        }
        let m = &self.channel(index).meta.0;
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect`.
        let (epoch, state) = status_parts(m.status.load(Ordering::Acquire));
        if state != STATE_CLAIMED {
            return None;
        }
        let r = Ordering::Relaxed;
        Some(ChannelClaim {
            index,
            epoch,
            client_token: m.client_token.load(r),
            pid: m.owner_pid.load(r),
            tid: m.owner_tid.load(r),
            start_time: m.owner_start.load(r),
        })
    }

    /// Host (main or worker process): starts serving a claimed channel. Records this process as the
    /// channel's server (pid, start time, heartbeat) so the guest can tell if it dies.
    ///
    /// # Errors
    /// `NotClaimed` when the channel no longer carries this claim (released or re-claimed).
    pub fn serve(&self, claim: &ChannelClaim) -> Result<HostChannel, TransportError> {
        if claim.index >= self.inner.layout.channel_count {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let m = &self.channel(claim.index).meta.0;
        // SYNC POINT: pairs with the Release store of CLAIMED in `connect`.
        if m.status.load(Ordering::Acquire) != status(claim.epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(claim.index));
        }
        let me = sys::pid();
        m.server_start.store(sys::start_time(me), Ordering::Relaxed);
        m.server_beat.store(0, Ordering::Relaxed);
        // SYNC POINT: pairs with the Acquire load of `server_pid` in the guest's liveness check, which
        // then reads `server_start`.
        m.server_pid.store(me, Ordering::Release);
        self.inner.server_reg[claim.index as usize].store(
            (u64::from(me) << 32) | u64::from(claim.epoch),
            Ordering::Relaxed,
        );
        self.ensure_heartbeat();
        Ok(HostChannel::new(self.clone(), *claim))
    }

    /// Allocates a long-lived bulk block of at least `len` bytes owned by `owner` (a client token, or any
    /// non-zero tag the host chooses). Never blocks.
    ///
    /// # Errors
    /// `BulkExhausted` when no free run is large enough; `BadConfig` for `len == 0` or `owner == 0`.
    pub fn bulk_alloc(&self, len: u64, owner: u64) -> Result<BulkBlock, TransportError> {
        if len == 0 || owner == 0 {
            return Err(TransportError::BadConfig(
                "bulk_alloc needs len > 0 and owner != 0",
            ));
        }
        crate::bulk::alloc(self, len, owner, false).ok_or(TransportError::BulkExhausted(len))
    }

    /// Frees a block from [`Region::bulk_alloc`].
    ///
    /// # Errors
    /// `BadBlock` when the block is out of range or not (entirely) owned by `block.owner`.
    pub fn bulk_free(&self, block: BulkBlock) -> Result<(), TransportError> {
        crate::bulk::free(self, block.offset, block.len, block.owner)
    }

    /// Frees every block owned by `owner` (e.g. a dead client's token); returns how many blocks.
    pub fn bulk_release_owner(&self, owner: u64) -> usize {
        crate::bulk::release_owner(self, owner)
    }

    /// Pointer to the first byte of `block` in this process's mapping. Other processes may read and
    /// write the same bytes at any time: use it only under a protocol that says who owns them.
    ///
    /// # Errors
    /// `BadBlock` when the block lies outside the bulk area.
    pub fn bulk_ptr(&self, block: &BulkBlock) -> Result<*mut u8, TransportError> {
        crate::bulk::check_range(self, block.offset, block.len).ok_or(
            TransportError::BadBlock {
                offset: block.offset,
                len: block.len,
                owner: block.owner,
            },
        )?;
        Ok(self.ptr_at(self.inner.layout.bulk_offset + block.offset, block.len))
    }

    /// Copies `data` into `block` at byte `at`.
    ///
    /// # Errors
    /// `BadBlock` when `at + data.len()` exceeds the block or the block lies outside the bulk area.
    pub fn bulk_write(
        &self,
        block: &BulkBlock,
        at: u64,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let p = self.bulk_range(block, at, data.len() as u64)?;
        // SAFETY: `p..p+len` lies inside the mapped bulk area (checked); source is a distinct local slice.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Copies bytes of `block` starting at `at` into `out`.
    ///
    /// # Errors
    /// `BadBlock` when `at + out.len()` exceeds the block or the block lies outside the bulk area.
    pub fn bulk_read(
        &self,
        block: &BulkBlock,
        at: u64,
        out: &mut [u8],
    ) -> Result<(), TransportError> {
        let p = self.bulk_range(block, at, out.len() as u64)?;
        // SAFETY: `p..p+len` lies inside the mapped bulk area (checked); destination is a local slice.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn bulk_range(&self, block: &BulkBlock, at: u64, len: u64) -> Result<*mut u8, TransportError> {
        let bad = TransportError::BadBlock {
            offset: block.offset,
            len: block.len,
            owner: block.owner,
        };
        if at.checked_add(len).is_none_or(|end| end > block.len) {
            return Err(bad);
        }
        let base = self.bulk_ptr(block)?;
        // SAFETY: `at + len <= block.len` and the block lies inside the mapping.
        Ok(unsafe { base.add(at as usize) })
    }

    /// Guest-side view of the host's liveness for channel `index` (used by waits).
    pub(crate) fn check_server(
        &self,
        index: u32,
        epoch: u32,
        watch: &mut BeatWatch,
    ) -> Result<(), TransportError> {
        let h = self.header();
        if h.generation.load(Ordering::Relaxed) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        let m = &self.channel(index).meta.0;
        if m.status.load(Ordering::Relaxed) != status(epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(index));
        }
        // SYNC POINT: pairs with the Release store of `server_pid` in `serve`.
        let spid = m.server_pid.load(Ordering::Acquire);
        let (pid, start, beat, source) = if spid != 0 {
            watch.served();
            (
                spid,
                m.server_start.load(Ordering::Relaxed),
                m.server_beat.load(Ordering::Relaxed),
                u64::from(spid),
            )
        } else {
            // A live host that never hands the claim to a worker must not hold the guest forever.
            if watch.unserved_past(self.inner.peer_timeout) {
                return Err(TransportError::PeerGone(GoneReason::NotServed));
            }
            let hpid = h.host_pid.load(Ordering::Relaxed);
            (
                hpid,
                h.host_start_time.load(Ordering::Relaxed),
                h.host_beat.load(Ordering::Relaxed),
                1 << 40,
            )
        };
        if self.inner.host_pids_comparable && !sys::process_alive(pid, start) {
            return Err(TransportError::PeerGone(GoneReason::ProcessExited));
        }
        if watch.stalled(source, beat, self.inner.peer_timeout) {
            return Err(TransportError::PeerGone(GoneReason::HeartbeatStalled));
        }
        Ok(())
    }

    /// `PeerGone(RegionTruncated)` once the region file was shrunk under this process's mapping
    /// (in a process protected by [`crate::protect_from_truncation`]): nothing read from the
    /// region can be trusted after that.
    ///
    /// # Errors
    /// As said.
    pub fn check_mapped(&self) -> Result<(), TransportError> {
        if self.inner.map.truncated() {
            return Err(TransportError::PeerGone(GoneReason::RegionTruncated));
        }
        Ok(())
    }

    /// Host-side view of the client's liveness for channel `claim` (used by waits).
    pub(crate) fn check_client(
        &self,
        claim: &ChannelClaim,
        watch: &mut BeatWatch,
    ) -> Result<(), TransportError> {
        self.check_mapped()?;
        let m = &self.channel(claim.index).meta.0;
        let word = m.status.load(Ordering::Relaxed);
        if word == status(claim.epoch, STATE_CLOSED) {
            return Err(TransportError::Closed);
        }
        if word != status(claim.epoch, STATE_CLAIMED) {
            return Err(TransportError::NotClaimed(claim.index));
        }
        if self.header().generation.load(Ordering::Relaxed) != self.inner.generation {
            return Err(TransportError::PeerGone(GoneReason::HostRestarted));
        }
        if self.inner.mode == DoorbellMode::Futex
            && m.owner_pid_ns.load(Ordering::Relaxed) == self.inner.own_pid_ns
            && !sys::process_alive(claim.pid, claim.start_time)
        {
            return Err(TransportError::PeerGone(GoneReason::ProcessExited));
        }
        if watch.stalled(
            0,
            m.guest_beat.load(Ordering::Relaxed),
            self.inner.peer_timeout,
        ) {
            return Err(TransportError::PeerGone(GoneReason::HeartbeatStalled));
        }
        Ok(())
    }
}
