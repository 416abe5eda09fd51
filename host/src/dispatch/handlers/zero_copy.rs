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

use super::{real_or_unsupported, respond};
use crate::dispatch::ClientContext;

/// `CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP`: every context sees the block,
/// and it has a device alias.
const REGISTER_FLAGS: u32 = 0x01 | 0x02;

/// One registered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registration {
    block: BulkBlock,
    /// This worker's address of the block's first byte.
    host: usize,
    /// The device alias of that byte.
    alias: u64,
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

    /// Removes the registration of the block at bulk offset `offset`.
    fn remove_offset(&mut self, offset: u64) -> Option<Registration> {
        let alias = self
            .by_alias
            .values()
            .find(|r| r.block.offset == offset)?
            .alias;
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
    pub fn attach(&self, region: Region, client_token: u64) {
        let _ = self.region.set((region, client_token));
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `[addr, addr + len)` lies inside the device alias of one block registered for
    /// this client: the only host memory a guest may name in a copy or memset.
    pub fn holds(&self, addr: u64, len: u64) -> bool {
        self.table().holding(addr, len).is_some()
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

/// `cuMemHostAlloc` / `cuMemAllocHost_v2` (zero-copy placement): `u64 len, u32 flags` → result,
/// `u64 offset, u64 block_len, u64 device_alias`. The worker allocates a bulk block of at least
/// `len` bytes owned by the client's token, registers its own mapping of it with
/// `cuMemHostRegister_v2(PORTABLE | DEVICEMAP)` and asks `cuMemHostGetDevicePointer_v2` for the
/// alias. `CUDA_ERROR_OUT_OF_MEMORY` when the area (or the client's share of it, 15/16) is full;
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
    dec.finish()?;
    let registrations = &client.zero_copy;
    let Some((region, token)) = registrations.region.get() else {
        tracing::warn!("zero-copy allocation without a region");
        return answer(out, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    };
    if len == 0 || len > region.bulk_size() {
        tracing::warn!(len, "zero-copy allocation larger than the bulk area");
        return answer(out, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let register = real_or_unsupported!(cuMemHostRegister_v2, out);
    let device_pointer = real_or_unsupported!(cuMemHostGetDevicePointer_v2, out);
    let unregister = real_or_unsupported!(cuMemHostUnregister, out);
    let block = match region.bulk_alloc(len, *token) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(len, "no bulk space for pinned memory: {e}");
            return answer(out, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
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
        return answer(out, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let host = match region.bulk_ptr(&block) {
        Ok(p) => p,
        Err(e) => {
            give_back("no pointer");
            tracing::error!("bulk block from our own allocator is out of range: {e}");
            return answer(out, CUresult::CUDA_ERROR_UNKNOWN);
        }
    };
    let host_va = host.cast::<c_void>();
    // SAFETY: `host` is this process's mapping of `block.len` bytes of the bulk area, which stays
    // mapped while the region handle in `registrations` lives (the worker's lifetime).
    let result = unsafe { register(host_va, block.len as usize, REGISTER_FLAGS) };
    if result != CUresult::CUDA_SUCCESS {
        give_back("registration refused");
        tracing::warn!(
            len = block.len,
            result = result.0,
            "cuMemHostRegister refused a bulk block"
        );
        return answer(out, result);
    }
    let mut alias: CUdeviceptr = 0;
    // SAFETY: `alias` is a live local; `host_va` was registered just above.
    let result = unsafe { device_pointer(&mut alias, host_va, 0) };
    if result != CUresult::CUDA_SUCCESS || alias == 0 {
        // SAFETY: registered just above.
        unsafe { unregister(host_va) };
        give_back("no device pointer");
        tracing::warn!(result = result.0, "registered block has no device pointer");
        return answer(out, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    let registration = Registration {
        block,
        host: host as usize,
        alias,
    };
    if !registrations.table().insert(registration) {
        // SAFETY: registered just above.
        unsafe { unregister(host_va) };
        give_back("alias overlaps");
        tracing::error!(alias, "the driver gave an alias that overlaps a live block");
        return answer(out, CUresult::CUDA_ERROR_UNKNOWN);
    }
    tracing::debug!(
        len,
        flags,
        offset = block.offset,
        alias,
        "zero-copy block registered"
    );
    let mut enc = ResponseHeader::start(out, 0);
    enc.put(block.offset);
    enc.put(block.len);
    enc.put(alias);
    Ok(())
}

/// `cuMemFreeHost` (zero-copy blocks): `u64 offset` → result. Unregisters the block at that bulk
/// offset, if this client has one there, and returns it to the bulk area;
/// `CUDA_ERROR_INVALID_VALUE` (one log line) for any other offset.
pub fn free(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let offset: u64 = dec.get()?;
    dec.finish()?;
    let registrations = &client.zero_copy;
    let Some((region, _)) = registrations.region.get() else {
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    };
    let unregister = real_or_unsupported!(cuMemHostUnregister, out);
    let Some(r) = registrations.table().remove_offset(offset) else {
        tracing::warn!(offset, "free of a pinned block this client does not have");
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    };
    // SAFETY: `r.host` was registered by `alloc` and not unregistered since (it was in the
    // table, which it has just left).
    let result = unsafe { unregister(r.host as *mut c_void) };
    if result != CUresult::CUDA_SUCCESS {
        tracing::warn!(result = result.0, "cuMemHostUnregister failed");
    }
    if let Err(e) = region.bulk_free(r.block) {
        tracing::warn!(offset, "cannot return a pinned block to the bulk area: {e}");
    }
    answer(out, result)
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
    fn a_client_may_pin_most_but_not_all_of_the_bulk_area() {
        assert_eq!(pin_limit(1 << 30), (1 << 30) - (1 << 26));
        assert_eq!(pin_limit(64 << 10), 61440);
    }
}
