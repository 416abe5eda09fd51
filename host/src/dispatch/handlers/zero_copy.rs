//! Zero-copy pinned memory: blocks of the region's bulk area that the guest uses as pinned host
//! memory, registered here with the real driver so that the GPU reads and writes the guest's
//! bytes directly. Guest half: `shim/src/handlers/zero_copy.rs`.
//!
//! The worker allocates each block itself, owned by its client's token (the supervisor frees a
//! gone client's blocks with `bulk_release_owner`; the driver drops the registrations when the
//! worker exits), and keeps the only table that counts: the shared block table is writable by
//! every guest, so its owner words prove nothing. A guest names a block by its bulk offset to
//! free it, and zero-copy memory in copies by device-alias addresses, which the copy handlers
//! (`memory.rs`) accept only inside a registration of this client ([`Registrations::holds`]).

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};
use transport::{BulkBlock, Region};

use super::respond;
use crate::dispatch::ClientContext;

/// `CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP`: every context sees the block,
/// and it has a device alias.
const REGISTER_FLAGS: u32 = 0x01 | 0x02;

/// One registered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registration {
    block: BulkBlock,
    /// The registered address of the block's first byte in this worker: the guest's own address
    /// when [`view_at`] could map it there, else the worker's region mapping.
    host: usize,
    /// The device alias of that byte (with unified addressing, `host` itself).
    alias: u64,
    /// Whether `host` is a view made by [`view_at`], to unmap on free.
    view: bool,
    /// Whether the block backs managed memory (`managed.rs`): freed by `cuMemFree`, never by
    /// `cuMemFreeHost`.
    managed: bool,
    /// Bytes the client asked for (at most `block.len`): a managed allocation's range.
    asked: u64,
}

/// The registrations of one client, by device alias. Pure bookkeeping (no driver, no region).
#[derive(Debug, Default)]
struct Table {
    by_alias: BTreeMap<u64, Registration>,
}

impl Table {
    /// The registration whose alias range holds `[addr, addr + len)` (`len = 0`: the byte at
    /// `addr`).
    fn holding(&self, addr: u64, len: u64) -> Option<&Registration> {
        let (_, r) = self.by_alias.range(..=addr).next_back()?;
        let end = addr.checked_add(len.max(1))?;
        (end <= r.alias.checked_add(r.block.len)?).then_some(r)
    }

    /// Records `r`; `false` if its alias range overlaps a known one.
    fn insert(&mut self, r: Registration) -> bool {
        let Some(end) = r.alias.checked_add(r.block.len) else {
            return false;
        };
        if self.holding(r.alias, 1).is_some() || self.by_alias.range(r.alias..end).next().is_some()
        {
            return false;
        }
        self.by_alias.insert(r.alias, r);
        true
    }

    /// Removes the registration of the pinned (not managed) block at bulk offset `offset`.
    fn remove_offset(&mut self, offset: u64) -> Option<Registration> {
        let alias = self
            .by_alias
            .values()
            .find(|r| r.block.offset == offset && !r.managed)?
            .alias;
        self.by_alias.remove(&alias)
    }

    /// Removes the managed block whose first byte's alias is `alias`.
    fn remove_managed(&mut self, alias: u64) -> Option<Registration> {
        if !self.by_alias.get(&alias)?.managed {
            return None;
        }
        self.by_alias.remove(&alias)
    }

    /// Bytes registered.
    fn bytes(&self) -> u64 {
        self.by_alias.values().map(|r| r.block.len).sum()
    }
}

/// What one client registered, and the region and token it allocates with.
#[derive(Default)]
pub struct Registrations {
    region: OnceLock<(Region, u64)>,
    table: Mutex<Table>,
}

impl Registrations {
    /// Gives the worker's mapping of the region and its client's token; until then (a spare
    /// without a client) allocations answer `CUDA_ERROR_NOT_SUPPORTED`.
    pub fn attach(&self, region: Region, client_id: u64) {
        let _ = self.region.set((region, client_id));
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `[addr, addr + len)` lies inside the device alias of one block registered for
    /// this client: the only host memory a guest may name in a copy or memset.
    pub fn holds(&self, addr: u64, len: u64) -> bool {
        self.table().holding(addr, len).is_some()
    }

    /// Whether a region is attached (a region client): managed memory is then a block of it.
    pub(super) fn has_region(&self) -> bool {
        self.region.get().is_some()
    }

    /// The managed block holding `[addr, addr + len)`: (its first byte, its length).
    pub(super) fn managed_holding(&self, addr: u64, len: u64) -> Option<(u64, u64)> {
        self.table()
            .holding(addr, len)
            .filter(|r| r.managed && addr.saturating_add(len) <= r.alias + r.asked)
            .map(|r| (r.alias, r.asked))
    }

    /// Places `len` bytes of managed memory: a block registered at the guest's own address of
    /// it, whose device pointer is that address (`guest_bulk_base` as in [`alloc`]). Answers
    /// (bulk offset, block length, pointer).
    ///
    /// # Errors
    /// As [`place`], and `CUDA_ERROR_NOT_SUPPORTED` (one log line) when the block cannot be
    /// mapped at the guest's address here or its device pointer differs from it (a driver
    /// without unified addressing for registered memory): one pointer must serve both sides.
    pub(super) fn place_managed(
        &self,
        len: u64,
        guest_bulk_base: u64,
    ) -> Result<(u64, u64, u64), CUresult> {
        if guest_bulk_base == 0 {
            tracing::warn!("managed allocation without the guest's bulk address");
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let r = place(self, len, guest_bulk_base, true)?;
        if r.view && r.alias == r.host as u64 {
            return Ok((r.block.offset, r.block.len, r.alias));
        }
        tracing::warn!(
            view = r.view,
            alias = r.alias,
            host = r.host,
            "managed memory refused: the worker cannot register the block at the guest's \
             address with device pointer = host pointer (needs unified addressing and \
             CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM)"
        );
        let removed = self.table().remove_managed(r.alias);
        if let Some(r) = removed {
            unplace(self, &r);
        }
        Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)
    }

    /// Frees the managed block whose first byte is `alias`; `None` when there is none.
    pub(super) fn release_managed(&self, alias: u64) -> Option<CUresult> {
        let r = self.table().remove_managed(alias)?;
        Some(unplace(self, &r))
    }
}

/// Share of the bulk area one client may pin: the rest stays for message chunks (which fall
/// back to one slot per frame, slowly, when the area is full).
fn pin_limit(bulk_size: u64) -> u64 {
    bulk_size - bulk_size / 16
}

fn answer(out: &mut Vec<u8>, result: CUresult) -> Result<(), DecodeError> {
    respond(out, result);
    Ok(())
}

/// `cuMemHostAlloc` / `cuMemAllocHost_v2` (zero-copy placement): `u64 len, u32 flags,
/// u64 guest_bulk_base` → result, `u64 offset, u64 block_len, u64 device_alias`. The worker
/// allocates a bulk block of at least `len` bytes owned by the client's token, maps a second
/// view of it at the guest's own address of the block (`guest_bulk_base + offset`, when that
/// range is free here; 0 asks for no view), registers the view (else its region mapping) with
/// `cuMemHostRegister_v2(PORTABLE | DEVICEMAP)` and asks `cuMemHostGetDevicePointer_v2` for the
/// alias. With the view and unified addressing the alias is the guest's pointer itself, so a
/// kernel or copy handed the pinned pointer directly (as XLA does) reaches the same bytes. `CUDA_ERROR_OUT_OF_MEMORY` when the area (or the client's share of it, 15/16) is full;
/// `CUDA_ERROR_NOT_SUPPORTED` without a region (a spare, a socket transport). `flags` are the
/// application's (logged only: the block is always registered portable and mapped).
pub fn alloc(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len: u64 = dec.get()?;
    let flags: u32 = dec.get()?;
    let guest_bulk_base: u64 = dec.get()?;
    dec.finish()?;
    let r = match place(&client.zero_copy, len, guest_bulk_base, false) {
        Ok(r) => r,
        Err(refused) => return answer(out, refused),
    };
    tracing::debug!(
        len,
        flags,
        offset = r.block.offset,
        alias = r.alias,
        "zero-copy block registered"
    );
    let mut enc = ResponseHeader::start(out, 0);
    enc.put(r.block.offset);
    enc.put(r.block.len);
    enc.put(r.alias);
    Ok(())
}

/// Allocates, maps (at the guest's address of the block when it can: `guest_bulk_base`, 0 for
/// none) and registers a block of at least `len` bytes for the client, and records it.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` without a region or the driver's functions,
/// `CUDA_ERROR_OUT_OF_MEMORY` when the area or the client's share of it is full, the driver's
/// refusal of the registration.
fn place(
    registrations: &Registrations,
    len: u64,
    guest_bulk_base: u64,
    managed: bool,
) -> Result<Registration, CUresult> {
    let Some((region, token)) = registrations.region.get() else {
        tracing::warn!("zero-copy allocation without a region");
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    };
    if len == 0 || len > region.bulk_size() {
        tracing::warn!(len, "zero-copy allocation larger than the bulk area");
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let missing = |name: &str| {
        tracing::warn!("the driver lacks {name}");
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    };
    let register = crate::driver::real::cuMemHostRegister_v2()
        .ok_or_else(|| missing("cuMemHostRegister_v2"))?;
    let device_pointer = crate::driver::real::cuMemHostGetDevicePointer_v2()
        .ok_or_else(|| missing("cuMemHostGetDevicePointer_v2"))?;
    let unregister =
        crate::driver::real::cuMemHostUnregister().ok_or_else(|| missing("cuMemHostUnregister"))?;
    let block = match region.bulk_alloc(len, *token) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(len, "no bulk space for pinned memory: {e}");
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
    };
    let give_back = |why: &str| {
        if let Err(e) = region.bulk_free(block) {
            tracing::warn!(offset = block.offset, "cannot free bulk block ({why}): {e}");
        }
    };
    if registrations.table().bytes() + block.len > pin_limit(region.bulk_size()) {
        give_back("over the pinning share");
        tracing::debug!(len, "client's pinned memory would crowd out message chunks");
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let host = match region.bulk_ptr(&block) {
        Ok(p) => p,
        Err(e) => {
            give_back("no pointer");
            tracing::error!("bulk block from our own allocator is out of range: {e}");
            return Err(CUresult::CUDA_ERROR_UNKNOWN);
        }
    };
    let view = match guest_bulk_base {
        0 => None,
        base => base
            .checked_add(block.offset)
            .and_then(|want| view_at(host, want, block.len)),
    };
    if view.is_none() && guest_bulk_base != 0 {
        report_no_view(guest_bulk_base.wrapping_add(block.offset));
    }
    let unview = || {
        if let Some(v) = view {
            unmap_view(v, block.len);
        }
    };
    let host_va = view.map_or(host.cast::<c_void>(), |v| v as *mut c_void);
    // SAFETY: `host_va` is this process's mapping (the region's, or a view of the same pages) of
    // `block.len` bytes of the bulk area, which stays mapped while the region handle in
    // `registrations` lives (the worker's lifetime) and, for a view, until `free` unmaps it.
    let result = unsafe { register(host_va, block.len as usize, REGISTER_FLAGS) };
    if result != CUresult::CUDA_SUCCESS {
        unview();
        give_back("registration refused");
        tracing::warn!(
            len = block.len,
            result = result.0,
            "cuMemHostRegister refused a bulk block"
        );
        return Err(result);
    }
    let mut alias: CUdeviceptr = 0;
    // SAFETY: `alias` is a live local; `host_va` was registered just above.
    let result = unsafe { device_pointer(&mut alias, host_va, 0) };
    if result != CUresult::CUDA_SUCCESS || alias == 0 {
        // SAFETY: registered just above.
        unsafe { unregister(host_va) };
        unview();
        give_back("no device pointer");
        tracing::warn!(result = result.0, "registered block has no device pointer");
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    let registration = Registration {
        block,
        host: host_va as usize,
        alias,
        view: view.is_some(),
        managed,
        asked: len,
    };
    if !registrations.table().insert(registration) {
        // SAFETY: registered just above.
        unsafe { unregister(host_va) };
        unview();
        give_back("alias overlaps");
        tracing::error!(alias, "the driver gave an alias that overlaps a live block");
        return Err(CUresult::CUDA_ERROR_UNKNOWN);
    }
    Ok(registration)
}

/// Unregisters a block that has left the table, unmaps its view and returns it to the bulk
/// area; answers the unregistration's result.
fn unplace(registrations: &Registrations, r: &Registration) -> CUresult {
    let result = match crate::driver::real::cuMemHostUnregister() {
        // SAFETY: `r.host` was registered by `place` and not unregistered since (it was in the
        // table, which it has just left).
        Some(unregister) => unsafe { unregister(r.host as *mut c_void) },
        None => CUresult::CUDA_ERROR_NOT_SUPPORTED,
    };
    if result != CUresult::CUDA_SUCCESS {
        tracing::warn!(result = result.0, "cuMemHostUnregister failed");
    }
    if r.view {
        unmap_view(r.host, r.block.len);
    }
    if let Some((region, _)) = registrations.region.get() {
        if let Err(e) = region.bulk_free(r.block) {
            tracing::warn!(
                offset = r.block.offset,
                "cannot return a pinned block to the bulk area: {e}"
            );
        }
    }
    result
}

/// `cuMemFreeHost` (zero-copy blocks): `u64 offset` → result. Unregisters the block at that bulk
/// offset, if this client has one there, and returns it to the bulk area;
/// `CUDA_ERROR_INVALID_VALUE` (one log line) for any other offset, a managed block's included
/// (`cuMemFree` frees those, `managed.rs`).
pub fn free(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let offset: u64 = dec.get()?;
    dec.finish()?;
    let registrations = &client.zero_copy;
    if registrations.region.get().is_none() {
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let Some(r) = registrations.table().remove_offset(offset) else {
        tracing::warn!(offset, "free of a pinned block this client does not have");
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    };
    answer(out, unplace(registrations, &r))
}

/// Maps a second view of the `len` bytes at `host` (inside this worker's `MAP_SHARED` region
/// mapping) at address `want`, if that whole range is free in this process: the guest's address
/// of the same bytes, so that with unified addressing the device alias equals the guest's
/// pointer. `None` (nothing mapped) when the range is taken, misaligned or out of range.
fn view_at(host: *mut u8, want: u64, len: u64) -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let end = want.checked_add(len)?;
    if want == 0 || !want.is_multiple_of(page) || len == 0 || end > (1u64 << 47) {
        return None;
    }
    let (want_p, len) = (want as usize as *mut c_void, len as usize);
    // A placeholder claims the range only if nothing is there (MAP_FIXED_NOREPLACE never
    // replaces a mapping); kernels before 4.17 treat the flag as a hint, hence the check.
    // SAFETY: an anonymous mapping at a free address; nothing existing is touched.
    let placeholder = unsafe {
        libc::mmap(
            want_p,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if placeholder == libc::MAP_FAILED {
        return None;
    }
    if placeholder != want_p {
        // SAFETY: the mapping just made, somewhere else; nobody else knows of it.
        unsafe { libc::munmap(placeholder, len) };
        return None;
    }
    // `mremap` with old size 0 duplicates a shared mapping; MREMAP_FIXED puts the duplicate over
    // our own placeholder (and nothing else).
    // SAFETY: `host` is page aligned (bulk blocks are) inside a MAP_SHARED mapping of at least
    // `len` bytes; the target range is exactly the placeholder this function owns.
    let moved = unsafe {
        libc::mremap(
            host.cast(),
            0,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            want_p,
        )
    };
    if moved != want_p {
        // SAFETY: the placeholder (or, had mremap moved elsewhere, nothing of anyone else's: it
        // only ever targets `want_p`) is this function's own.
        unsafe { libc::munmap(want_p, len) };
        return None;
    }
    Some(want as usize)
}

/// Unmaps a view made by [`view_at`].
fn unmap_view(at: usize, len: u64) {
    // SAFETY: `at..at + len` is a view made by `view_at` and registered with no one any more.
    if unsafe { libc::munmap(at as *mut c_void, len as usize) } != 0 {
        tracing::warn!(at, "cannot unmap a pinned block's view");
    }
}

/// Logs, once per worker, that pinned memory lives at another address here than in the guest.
fn report_no_view(want: u64) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // No ordering needed: the flag only deduplicates a log line.
    if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            want,
            "cannot map pinned memory at the guest's address in this worker: its device alias \
             differs from the guest pointer (kernels must take cuMemHostGetDevicePointer's value)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(offset: u64, len: u64, alias: u64) -> Registration {
        Registration {
            block: BulkBlock {
                offset,
                len,
                owner: 7,
            },
            host: 0x1000 + offset as usize,
            alias,
            view: false,
            managed: false,
            asked: len,
        }
    }

    #[test]
    fn holds_only_whole_ranges_inside_one_registration() {
        let mut t = Table::default();
        assert!(t.insert(reg(0, 0x10000, 0x7000_0000)));
        assert!(t.insert(reg(0x10000, 0x10000, 0x7000_0000 + 0x10000)));
        assert!(t.holding(0x7000_0000, 0x10000).is_some());
        assert!(t.holding(0x7000_fff0, 16).is_some());
        assert!(
            t.holding(0x7000_fff0, 17).is_none(),
            "a range across two registrations is two allocations, refused"
        );
        assert!(t.holding(0x6fff_ffff, 1).is_none());
        assert!(t.holding(0x7002_0000, 1).is_none());
        assert!(t.holding(u64::MAX - 2, 8).is_none());
        assert!(t.holding(0x7000_0000, u64::MAX).is_none());
        assert_eq!(t.bytes(), 0x20000);
    }

    #[test]
    fn refuses_overlapping_aliases_and_frees_by_offset_only() {
        let mut t = Table::default();
        assert!(t.insert(reg(0, 0x10000, 0x7000_0000)));
        assert!(!t.insert(reg(0x20000, 0x10000, 0x7000_8000)));
        assert!(!t.insert(reg(0x20000, 0x10000, 0x6fff_8000)));
        assert!(!t.insert(reg(0x20000, 0x10000, u64::MAX - 4)));
        assert_eq!(t.remove_offset(0x20000), None, "never registered");
        assert_eq!(t.remove_offset(0).map(|r| r.alias), Some(0x7000_0000));
        assert_eq!(t.remove_offset(0), None, "double free");
        assert!(t.holding(0x7000_0000, 1).is_none());
    }

    #[test]
    fn managed_blocks_are_not_freed_as_pinned_ones() {
        let mut t = Table::default();
        assert!(t.insert(Registration {
            managed: true,
            ..reg(0, 0x10000, 0x7000_0000)
        }));
        assert!(t.insert(reg(0x10000, 0x10000, 0x7001_0000)));
        assert_eq!(t.remove_offset(0), None, "cuMemFreeHost of managed memory");
        assert_eq!(
            t.remove_managed(0x7001_0000),
            None,
            "cuMemFree of pinned memory"
        );
        assert_eq!(t.remove_managed(0x7000_0010), None, "not the first byte");
        assert_eq!(
            t.remove_managed(0x7000_0000).map(|r| r.block.offset),
            Some(0)
        );
        assert_eq!(t.remove_offset(0x10000).map(|r| r.alias), Some(0x7001_0000));
    }

    #[test]
    fn a_view_shares_the_bytes_and_never_replaces_a_mapping() {
        let len = 64 << 10;
        // SAFETY: fresh shared anonymous mappings owned by this test.
        let (shared, spare) = unsafe {
            let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
            let prot = libc::PROT_READ | libc::PROT_WRITE;
            (
                libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0),
                libc::mmap(std::ptr::null_mut(), 2 * len, prot, flags, -1, 0),
            )
        };
        assert!(shared != libc::MAP_FAILED && spare != libc::MAP_FAILED);
        // Occupied: the spare mapping itself is at `spare`.
        assert_eq!(view_at(shared.cast(), spare as u64, len as u64), None);
        // Free: release the spare's second half and map a view there.
        let free = spare as usize + len;
        // SAFETY: the second half of our own spare mapping.
        assert_eq!(unsafe { libc::munmap(free as *mut c_void, len) }, 0);
        assert_eq!(view_at(shared.cast(), free as u64, len as u64), Some(free));
        // SAFETY: both are live mappings of `len` bytes made above.
        unsafe {
            shared.cast::<u8>().write(42);
            assert_eq!(
                (free as *const u8).read(),
                42,
                "the view shows the same bytes"
            );
        }
        assert_eq!(view_at(shared.cast(), 0, len as u64), None);
        assert_eq!(view_at(shared.cast(), free as u64 + 1, len as u64), None);
        unmap_view(free, len as u64);
        // SAFETY: our own mappings.
        unsafe {
            libc::munmap(shared, len);
            libc::munmap(spare, len);
        }
    }

    #[test]
    fn a_client_may_pin_most_but_not_all_of_the_bulk_area() {
        assert_eq!(pin_limit(1 << 30), (1 << 30) - (1 << 26));
        assert_eq!(pin_limit(64 << 10), 61440);
    }
}
