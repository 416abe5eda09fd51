//! Zero-copy pinned memory: `cuMemAllocHost`/`cuMemHostAlloc` memory placed in the bulk area of
//! the shared region, which the host worker maps too and registers with the real driver
//! (`cuMemHostRegister` with `PORTABLE | DEVICEMAP`). The GPU then reads and writes the guest's
//! bytes directly, and every copy or memset with a pinned end runs on the host through the
//! block's **device alias** (the device pointer the host's driver gave for it), stream-ordered
//! and without shipping bytes.
//!
//! The host allocates the block (owner = this process's client token, which the host knows from
//! the claim) and keeps its own table of what it registered for this client; the guest names a
//! block by its bulk offset (to free it) or by device-alias addresses (in copies), and the host
//! checks both against its table. Host half and wire format:
//! `host/src/dispatch/handlers/zero_copy.rs`.
//!
//! Fallback: without a region (TCP), with `VGPU_ZERO_COPY=0`, or when the host cannot place or
//! register a block, pinned memory is plain guest memory (`memory.rs`), except that a
//! `CU_MEMHOSTALLOC_DEVICEMAP` request, which promises a device alias, fails instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use cuda_headers::*;
use transport::BulkBlock;

use crate::config;
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// `CU_MEMHOSTALLOC_DEVICEMAP`: the caller wants a device alias of the allocation.
pub(crate) const DEVICEMAP: u32 = 0x02;

/// One zero-copy allocation as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Guest address of the first byte (this process's mapping of the bulk block).
    pub guest: usize,
    /// Bytes the application asked for (at most `block_len`).
    pub len: usize,
    /// Device alias of the first byte, as the host's driver gave it.
    pub alias: u64,
    /// Offset of the block in the bulk area (names it to the host).
    pub offset: u64,
    /// Bytes of the bulk block (whole bulk blocks).
    pub block_len: u64,
    /// Flags the application passed to `cuMemHostAlloc` (for managed memory: to
    /// `cuMemAllocManaged`).
    pub flags: u32,
    /// Whether the block is managed memory (`managed.rs`): its alias is its guest address, and
    /// `cuMemFree`, not `cuMemFreeHost`, frees it.
    pub managed: bool,
}

impl Block {
    /// Bytes a lookup treats as belonging to the block (a zero-byte allocation still owns its
    /// first byte, as plain pinned memory does).
    fn span(&self) -> usize {
        self.len.max(1)
    }

    /// Whether `[addr, addr + n)` lies inside the guest view of the block (`n = 0` is taken as
    /// the one byte at `addr`).
    pub fn holds_guest(&self, addr: usize, n: usize) -> bool {
        addr >= self.guest
            && addr
                .checked_add(n.max(1))
                .is_some_and(|end| end <= self.guest + self.span())
    }

    /// Whether `[addr, addr + n)` lies inside the device alias of the block (`n = 0` as above).
    pub fn holds_alias(&self, addr: u64, n: usize) -> bool {
        addr >= self.alias
            && addr
                .checked_add(n.max(1) as u64)
                .is_some_and(|end| end <= self.alias + self.span() as u64)
    }
}

/// What an address names, once resolved through the table: the same byte seen from the guest
/// and from the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The block.
    pub block: Block,
    /// Guest address of the byte.
    pub guest: usize,
    /// Device alias of the byte.
    pub alias: u64,
}

/// The guest's zero-copy allocations, by guest address and by device alias.
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_guest: BTreeMap<usize, Block>,
    by_alias: BTreeMap<u64, usize>,
    /// The process the managed blocks belong to (0 before the first).
    pid: u32,
}

impl Table {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            by_guest: BTreeMap::new(),
            by_alias: BTreeMap::new(),
            pid: 0,
        }
    }

    /// In a process other than the one that last looked (a forked child), forgets the managed
    /// blocks: the child's worker never heard of them, and `fork_copies` made the child's view
    /// of them a private copy, plain memory now.
    fn forget_managed_of_other_process(&mut self, pid: u32) {
        if self.pid == pid {
            return;
        }
        self.pid = pid;
        let managed: Vec<usize> = self
            .by_guest
            .values()
            .filter(|b| b.managed)
            .map(|b| b.guest)
            .collect();
        for guest in managed {
            self.remove(guest, true);
        }
    }

    /// Records `block`; `false` when its guest or alias range overlaps a known one (a host that
    /// handed out the same bytes twice).
    pub fn insert(&mut self, block: Block) -> bool {
        let span = block.span();
        let guest_clash = self.overlaps_guest(block.guest, span);
        let alias_clash = self.find_alias(block.alias).is_some()
            || self
                .by_alias
                .range(block.alias..block.alias + span as u64)
                .next()
                .is_some();
        if guest_clash || alias_clash {
            return false;
        }
        self.by_alias.insert(block.alias, block.guest);
        self.by_guest.insert(block.guest, block);
        true
    }

    /// Whether any block holds a byte of guest range `[base, base + len)`.
    pub fn overlaps_guest(&self, base: usize, len: usize) -> bool {
        self.find_guest(base).is_some()
            || self
                .by_guest
                .range(base..base.saturating_add(len.max(1)))
                .next()
                .is_some()
    }

    /// Removes the block whose guest address starts at `guest`, if it is managed memory or not
    /// as `managed` says.
    pub fn remove(&mut self, guest: usize, managed: bool) -> Option<Block> {
        if self.by_guest.get(&guest)?.managed != managed {
            return None;
        }
        let block = self.by_guest.remove(&guest)?;
        self.by_alias.remove(&block.alias);
        Some(block)
    }

    /// The block holding guest address `addr`.
    pub fn find_guest(&self, addr: usize) -> Option<Block> {
        let (_, block) = self.by_guest.range(..=addr).next_back()?;
        block.holds_guest(addr, 0).then_some(*block)
    }

    /// The block whose device alias holds `addr`.
    pub fn find_alias(&self, addr: u64) -> Option<Block> {
        let (_, guest) = self.by_alias.range(..=addr).next_back()?;
        let block = self.by_guest.get(guest)?;
        block.holds_alias(addr, 0).then_some(*block)
    }

    /// Resolves `addr` (a guest address or a device alias) when `[addr, addr + n)` lies inside
    /// one block. Guest addresses are tried first: the two ranges are different memory of
    /// different processes, so a clash would only misroute, never reach outside a block.
    pub fn resolve(&self, addr: u64, n: usize) -> Option<Resolved> {
        if let Some(block) = self.find_guest(addr as usize) {
            return block.holds_guest(addr as usize, n).then(|| Resolved {
                block,
                guest: addr as usize,
                alias: block.alias + (addr - block.guest as u64),
            });
        }
        let block = self.find_alias(addr)?;
        block.holds_alias(addr, n).then(|| Resolved {
            block,
            guest: block.guest + (addr - block.alias) as usize,
            alias: addr,
        })
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table::new());

fn table() -> std::sync::MutexGuard<'static, Table> {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    t.forget_managed_of_other_process(std::process::id());
    t
}

/// Resolves a guest address or device alias spanning `n` bytes inside one zero-copy block.
pub(crate) fn resolve(addr: u64, n: usize) -> Option<Resolved> {
    table().resolve(addr, n)
}

/// The zero-copy block holding guest address `addr`.
pub(crate) fn containing(addr: usize) -> Option<Block> {
    table().find_guest(addr)
}

/// Whether a zero-copy block holds a byte of guest range `[base, base + len)`.
pub(crate) fn overlaps(base: usize, len: usize) -> bool {
    table().overlaps_guest(base, len)
}

/// Whether `addr` lies in the device alias of a zero-copy block: memory of the host worker,
/// never to be dereferenced here.
pub(crate) fn is_alias(addr: u64) -> bool {
    table().find_alias(addr).is_some()
}

/// `VGPU_ZERO_COPY=0` turns zero-copy off (pinned memory is then plain guest memory).
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("VGPU_ZERO_COPY").map_or(true, |v| v.trim() != "0"))
}

/// Why no zero-copy block was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotPlaced {
    /// `VGPU_ZERO_COPY=0`, or a zero-byte request: plain memory, as before zero-copy existed.
    Disabled,
    /// The host is reached over TCP: there is no shared memory to place it in.
    OverTcp,
    /// The host could not place or register a block (full bulk area, driver refusal).
    Refused(CuError),
}

/// Asks the host for a block of the bulk area (`id`: `cuMemHostAlloc` or `cuMemAllocManaged`):
/// `u64 len, u32 flags, u64 guest_bulk_base` → `u64 offset, u64 block_len, u64 device_pointer`.
fn place_block(id: u32, len: usize, flags: u32) -> CuResult<(u64, u64, u64)> {
    call_with(
        id,
        |enc| {
            enc.put(len as u64);
            enc.put(flags);
            enc.put(guest_bulk_base());
        },
        |dec| {
            let offset: u64 = dec.get().map_err(bad_response)?;
            let block_len: u64 = dec.get().map_err(bad_response)?;
            let device: u64 = dec.get().map_err(bad_response)?;
            Ok((offset, block_len, device))
        },
    )
}

/// Places `len` bytes in the bulk area and has the host register them.
///
/// # Errors
/// [`NotPlaced`]: the caller falls back to plain memory or fails a `DEVICEMAP` request.
pub(crate) fn alloc(len: usize, flags: u32) -> Result<*mut u8, NotPlaced> {
    if !enabled() || len == 0 {
        return Err(NotPlaced::Disabled);
    }
    match crate::init::host_transport() {
        Ok(config::Transport::Region(_)) => {}
        Ok(config::Transport::Tcp(..)) => return Err(NotPlaced::OverTcp),
        Err(e) => return Err(NotPlaced::Refused(e)),
    }
    let placed = place_block(shim_macros::cuda_call_id!(cuMemHostAlloc), len, flags);
    let (offset, block_len, alias) = placed.map_err(NotPlaced::Refused)?;
    let Some(region) = crate::channel::region_if_open() else {
        // The call above went through the region, so it is open; a host that answered anyway
        // gets its block back.
        release_on_host(offset);
        return Err(NotPlaced::Refused(CuError::UNKNOWN));
    };
    let bulk = BulkBlock {
        offset,
        len: block_len,
        owner: region.client_id(),
    };
    let ptr = match region.bulk_ptr(&bulk) {
        Ok(p) if block_len >= len as u64 && alias != 0 => p,
        other => {
            log!(
                Level::Error,
                "the host answered a pinned allocation with an unusable block (offset {offset}, {block_len} bytes, alias {alias:#x}): {}",
                other.err().map_or_else(|| "too small".to_owned(), |e| e.to_string())
            );
            release_on_host(offset);
            return Err(NotPlaced::Refused(CuError::UNKNOWN));
        }
    };
    let block = Block {
        guest: ptr as usize,
        len,
        alias,
        offset,
        block_len,
        flags,
        managed: false,
    };
    if !table().insert(block) {
        log!(
            Level::Error,
            "the host answered a pinned allocation with a block that overlaps a live one"
        );
        release_on_host(offset);
        return Err(NotPlaced::Refused(CuError::UNKNOWN));
    }
    Ok(ptr)
}

/// This process's address of the bulk area's first byte (0 when the region is not open): the
/// host maps each block at the same address, so the device alias is the guest pointer itself.
fn guest_bulk_base() -> u64 {
    crate::channel::region_if_open()
        .and_then(|region| {
            let first = BulkBlock {
                offset: 0,
                len: 1,
                owner: region.client_id(),
            };
            region.bulk_ptr(&first).ok()
        })
        .map_or(0, |p| p as u64)
}

fn release_on_host(offset: u64) {
    let freed = call_with(
        shim_macros::cuda_call_id!(cuMemFreeHost),
        |enc| enc.put(offset),
        |_| Ok(()),
    );
    if let Err(e) = freed {
        log!(
            Level::Warn,
            "cannot release pinned block at bulk offset {offset} on the host: {e:?}"
        );
    }
}

/// Frees the zero-copy block starting at `p`; `None` when `p` is not one.
///
/// The block leaves the table first (no copy can name it afterwards), then the host unregisters
/// it with the driver and returns it to the bulk area.
pub(crate) fn free(p: usize) -> Option<CuResult> {
    let block = table().remove(p, false)?;
    kept_attributes().remove(&block.guest);
    Some(call_with(
        shim_macros::cuda_call_id!(cuMemFreeHost),
        |enc| enc.put(block.offset),
        |_| Ok(()),
    ))
}

/// Places `len` bytes of managed memory (`cuMemAllocManaged`, `flags` its attach flags) in the
/// bulk area: the host maps the block at this process's address of it and registers it there,
/// so that the pointer answered is the same for the guest's CPU and for the GPU. Host half:
/// `host/src/dispatch/handlers/managed.rs`.
///
/// # Errors
/// The host's refusal (`CUDA_ERROR_OUT_OF_MEMORY` when the bulk area, the client's share of it
/// or its memory quota is spent); `CUDA_ERROR_UNKNOWN` for an answer that does not fit.
pub(crate) fn alloc_managed(len: usize, flags: u32) -> CuResult<*mut u8> {
    let (offset, block_len, device) =
        place_block(shim_macros::cuda_call_id!(cuMemAllocManaged), len, flags)?;
    let give_back = |why: &str| {
        log!(
            Level::Error,
            "cuMemAllocManaged: the host answered an unusable block (offset {offset}, {block_len} bytes, pointer {device:#x}): {why}"
        );
        crate::mirror::release_managed(device);
        Err(CuError::UNKNOWN)
    };
    let Some(region) = crate::channel::region_if_open() else {
        return give_back("no region");
    };
    let bulk = BulkBlock {
        offset,
        len: block_len,
        owner: region.client_id(),
    };
    let ptr = match region.bulk_ptr(&bulk) {
        Ok(p) if block_len >= len as u64 && device == p as u64 => p,
        Ok(_) => return give_back("not this process's address of the block, or too small"),
        Err(e) => return give_back(&e.to_string()),
    };
    let block = Block {
        guest: ptr as usize,
        len,
        alias: device,
        offset,
        block_len,
        flags,
        managed: true,
    };
    if !table().insert(block) {
        return give_back("overlaps a live block");
    }
    crate::fork_copies::track(ptr as usize, block_len as usize);
    Ok(ptr)
}

/// Forgets the managed block starting at guest address `p` (its host half is freed by the
/// `cuMemFree` that follows); `false` when `p` is not one.
pub(crate) fn forget_managed(p: usize) -> bool {
    let Some(block) = table().remove(p, true) else {
        return false;
    };
    crate::fork_copies::untrack(block.guest);
    kept_attributes().remove(&block.guest);
    true
}

/// Pointer attributes of a block that only the host's driver knows and that hold for the
/// block's whole life (its context, device, buffer id, …): the host's first answer, kept per
/// block (by its guest address) until [`free`]. PyTorch asks `cudaPointerGetAttributes` on every
/// pinned copy.
type KeptAttributes = BTreeMap<usize, Vec<(u32, Vec<u8>)>>;
static KEPT_ATTRIBUTES: Mutex<KeptAttributes> = Mutex::new(BTreeMap::new());

fn kept_attributes() -> std::sync::MutexGuard<'static, KeptAttributes> {
    KEPT_ATTRIBUTES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the driver's value of pointer attribute `attribute` stays the same for a zero-copy
/// block's life. Not `SYNC_MEMOPS`, which `cuPointerSetAttribute` changes, nor those the guest
/// answers itself.
fn attribute_is_lifelong(attribute: CUpointer_attribute) -> bool {
    use CUpointer_attribute as A;
    matches!(
        attribute,
        A::CU_POINTER_ATTRIBUTE_CONTEXT
            | A::CU_POINTER_ATTRIBUTE_BUFFER_ID
            | A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
            | A::CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE
            | A::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES
            | A::CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE
            | A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS
            | A::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE
    )
}

/// The host's kept answer for `attribute` of `block`, if it was asked before.
pub(crate) fn kept_attribute(block: &Block, attribute: CUpointer_attribute) -> Option<Vec<u8>> {
    kept_attributes()
        .get(&block.guest)?
        .iter()
        .find(|(a, _)| *a == attribute.0)
        .map(|(_, v)| v.clone())
}

/// Keeps the host's answer for a lifelong `attribute` of a live `block` (others are ignored).
pub(crate) fn keep_attribute(block: &Block, attribute: CUpointer_attribute, value: &[u8]) {
    if !attribute_is_lifelong(attribute) || containing(block.guest) != Some(*block) {
        return;
    }
    let mut kept = kept_attributes();
    let entry = kept.entry(block.guest).or_default();
    if !entry.iter().any(|(a, _)| *a == attribute.0) {
        entry.push((attribute.0, value.to_vec()));
    }
}

/// Reports, once per process, that pinned memory falls back to plain guest memory.
pub(crate) fn report_fallback(why: CuError) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    // No ordering needed: the flag only deduplicates a log line.
    if !REPORTED.swap(true, Ordering::Relaxed) {
        log!(
            Level::Warn,
            "pinned memory is plain guest memory (no device alias): the host could not place it in the shared region ({why:?})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(guest: usize, len: usize, alias: u64) -> Block {
        Block {
            guest,
            len,
            alias,
            offset: 0,
            block_len: len as u64,
            flags: 0,
            managed: false,
        }
    }

    #[test]
    fn resolves_guest_addresses_and_aliases_to_the_same_byte() {
        let mut t = Table::new();
        assert!(t.insert(block(0x10_0000, 0x2000, 0x7f00_0000_0000)));
        let r = t.resolve(0x10_0010, 16).expect("guest address inside");
        assert_eq!((r.guest, r.alias), (0x10_0010, 0x7f00_0000_0010));
        let r = t.resolve(0x7f00_0000_1ff0, 16).expect("alias inside");
        assert_eq!((r.guest, r.alias), (0x10_1ff0, 0x7f00_0000_1ff0));
        assert_eq!(t.resolve(0x10_1ff0, 17), None, "runs past the end");
        assert_eq!(
            t.resolve(0x7f00_0000_1ff0, 17),
            None,
            "alias runs past the end"
        );
        assert_eq!(t.resolve(0x10_2000, 1), None, "first byte after the block");
        assert_eq!(t.resolve(0x0f_ffff, 1), None, "byte before the block");
        assert_eq!(t.resolve(u64::MAX - 4, 8), None, "overflowing range");
        assert_eq!(t.find_guest(0x10_1fff).map(|b| b.guest), Some(0x10_0000));
        assert_eq!(t.find_alias(0x7f00_0000_2000), None);
    }

    #[test]
    fn refuses_overlaps_and_forgets_freed_blocks() {
        let mut t = Table::new();
        assert!(t.insert(block(0x10_0000, 0x1000, 0x9000_0000)));
        assert!(
            !t.insert(block(0x10_0800, 0x1000, 0xa000_0000)),
            "guest overlap inside"
        );
        assert!(
            !t.insert(block(0x0f_f800, 0x1000, 0xa000_0000)),
            "guest overlap before"
        );
        assert!(
            !t.insert(block(0x20_0000, 0x1000, 0x9000_0800)),
            "alias overlap"
        );
        assert!(
            t.insert(block(0x10_1000, 0x1000, 0x9000_1000)),
            "adjacent is fine"
        );
        assert_eq!(
            t.remove(0x10_0800, false),
            None,
            "only a block's start frees it"
        );
        assert_eq!(t.remove(0x10_0000, true), None, "not managed memory");
        assert_eq!(
            t.remove(0x10_0000, false).map(|b| b.alias),
            Some(0x9000_0000)
        );
        assert_eq!(t.resolve(0x10_0000, 1), None);
        assert_eq!(t.resolve(0x9000_0000, 1), None);
        assert!(t.resolve(0x9000_1000, 1).is_some(), "the other block stays");
        assert!(
            t.insert(block(0x10_0000, 0x1000, 0x9000_0000)),
            "space is reusable"
        );
    }

    #[test]
    fn a_forked_child_forgets_managed_blocks_only() {
        let mut t = Table::new();
        t.forget_managed_of_other_process(10);
        assert!(t.insert(Block {
            managed: true,
            ..block(0x10_0000, 0x1000, 0x10_0000)
        }));
        assert!(t.insert(block(0x20_0000, 0x1000, 0x9000_0000)));
        t.forget_managed_of_other_process(10);
        assert!(t.find_guest(0x10_0000).is_some(), "same process");
        t.forget_managed_of_other_process(11);
        assert!(t.find_guest(0x10_0000).is_none());
        assert!(t.find_alias(0x10_0000).is_none());
        assert!(t.find_guest(0x20_0000).is_some(), "pinned blocks stay");
    }

    #[test]
    fn a_zero_length_request_owns_its_first_byte() {
        let mut t = Table::new();
        assert!(t.insert(block(0x5000, 0, 0x6000)));
        assert!(t.resolve(0x5000, 1).is_some());
        assert!(t.resolve(0x5000, 0).is_some());
        assert!(t.resolve(0x5001, 0).is_none());
    }
}
