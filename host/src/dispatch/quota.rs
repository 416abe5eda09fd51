//! A client's GPU-memory quota (`vgpu-host --client-memory-mib N`): the device memory its
//! allocations may hold at once, and what it is told the card has.
//!
//! Every allocation a client asks for (`cuMemAlloc`, `cuMemAllocPitch`, `cuMemAllocAsync`,
//! `cuMemAllocFromPoolAsync`, `cuMemCreate`) reserves its size here before the driver sees it; one
//! that would take the client past its quota is answered `CUDA_ERROR_OUT_OF_MEMORY`, as a full
//! card would answer, and the client goes on. Frees (`cuMemFree`, `cuMemFreeAsync`,
//! `cuMemRelease`) give the size back. `cuMemGetInfo` and the NVML facade's memory answer report
//! the quota as the total and what is left of it as free (never more than the card has free), so
//! frameworks that size their caches from them (PyTorch, llama.cpp's `-ngl` fitting, Ollama's
//! scheduler) plan within it. HAMi-core limits memory the same way from inside the process; here
//! the guest cannot get around it.
//!
//! A VMM allocation (`cuMemCreate`) is held, as natively, until the client has released every
//! reference to its handle and unmapped every mapping of it (`cuMemMap`/`cuMemUnmap`): releasing
//! the handle of mapped memory gives nothing back yet.
//!
//! Counted is what the client asked for (a pitched allocation counts its pitch times its
//! height). What the driver takes for itself (contexts, module code, a memory pool's retained
//! blocks) is not counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cuda_headers::CUresult;

/// A client's quotas, as the host's flags set them (0: none).
#[derive(Debug, Default, Clone, Copy)]
pub struct Limits {
    /// Device memory its allocations may hold, in bytes (`--client-memory-mib`).
    pub memory_bytes: u64,
    /// Contexts it may hold (`--client-contexts`).
    pub contexts: usize,
}

/// One client's quota; a limit of 0 means none (nothing is refused; what is held is still
/// counted, for the host's statistics).
#[derive(Debug, Default)]
pub struct MemoryQuota {
    limit: u64,
    held: Mutex<Held>,
    /// Allocations refused (statistics: `accounting/`).
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    /// Bytes reserved or held.
    total: u64,
    /// Size of each live allocation, by device address (or VMM handle).
    sizes: HashMap<u64, u64>,
    /// VMM mappings: start address → the allocation handle mapped there.
    mappings: BTreeMap<u64, u64>,
    /// VMM allocation handle → how many mappings of it are live.
    mapped: HashMap<u64, u32>,
    /// VMM allocations the client holds no reference to, kept by their mappings.
    released: std::collections::HashSet<u64>,
}

impl Held {
    fn give_back(&mut self, address: u64) {
        if let Some(size) = self.sizes.remove(&address) {
            self.total -= size;
        }
    }

    /// One mapping of `handle` is gone.
    fn unmap_one(&mut self, handle: u64) {
        let Some(n) = self.mapped.get_mut(&handle) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.mapped.remove(&handle);
            if self.released.remove(&handle) {
                self.give_back(handle);
            }
        }
    }
}

/// Bytes reserved for an allocation under way: [`MemoryQuota::commit`] or
/// [`MemoryQuota::cancel`] it.
#[derive(Debug)]
#[must_use]
pub struct Reservation(u64);

impl MemoryQuota {
    /// A quota of `limit` bytes (0: none).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Bytes the client's allocations hold (reservations under way included).
    pub fn held_bytes(&self) -> u64 {
        self.held().total
    }

    /// Allocations refused so far.
    pub fn refusals(&self) -> u64 {
        // SYNC POINT: Relaxed: a statistic, pairs with the Relaxed increment in `reserve`.
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a limit is set.
    pub fn is_set(&self) -> bool {
        self.limit != 0
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `size` bytes for an allocation about to be made.
    ///
    /// # Errors
    /// `CUDA_ERROR_OUT_OF_MEMORY` when the client's allocations would pass its quota.
    pub fn reserve(&self, size: u64) -> Result<Reservation, CUresult> {
        let mut held = self.held();
        match held.total.checked_add(size) {
            Some(t) if t <= self.limit || !self.is_set() => {
                held.total = t;
                Ok(Reservation(size))
            }
            _ => {
                tracing::info!(
                    size,
                    held = held.total,
                    limit = self.limit,
                    "allocation refused: over the client's memory quota"
                );
                // SYNC POINT: Relaxed: a statistic, read Relaxed by `refusals`.
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY)
            }
        }
    }

    /// The allocation was made at `address` with `size` bytes (which may differ from the
    /// reservation: a pitched allocation's real size).
    pub fn commit(&self, r: Reservation, address: u64, size: u64) {
        let mut held = self.held();
        held.total = held.total - r.0 + size;
        if let Some(old) = held.sizes.insert(address, size) {
            // The driver reused an address this table still held: its free went unseen.
            held.total -= old;
        }
    }

    /// The allocation failed: the reservation goes back.
    pub fn cancel(&self, r: Reservation) {
        self.held().total -= r.0;
    }

    /// The allocation at `address` was freed.
    pub fn release(&self, address: u64) {
        self.held().give_back(address);
    }

    /// VMM allocation `handle` was mapped at `address` (`cuMemMap` succeeded).
    pub fn mapped(&self, address: u64, handle: u64) {
        let mut held = self.held();
        if let Some(old) = held.mappings.insert(address, handle) {
            // The driver refuses a second mapping at a mapped address; one this table still
            // holds was unmapped unseen.
            held.unmap_one(old);
        }
        *held.mapped.entry(handle).or_default() += 1;
    }

    /// The mappings starting in `[address, address + size)` were unmapped (`cuMemUnmap`
    /// succeeded: the driver unmaps whole mappings only). An allocation whose handle was
    /// released is given back with its last mapping.
    pub fn unmapped(&self, address: u64, size: u64) {
        let mut held = self.held();
        let end = address.saturating_add(size);
        let gone: Vec<(u64, u64)> = held
            .mappings
            .range(address..end)
            .map(|(&a, &h)| (a, h))
            .collect();
        for (start, handle) in gone {
            held.mappings.remove(&start);
            held.unmap_one(handle);
        }
    }

    /// The client's last reference to VMM allocation `handle` was released (`cuMemRelease`):
    /// its memory is given back now, or with its last mapping.
    pub fn handle_released(&self, handle: u64) {
        let mut held = self.held();
        if held.mapped.contains_key(&handle) {
            held.released.insert(handle);
        } else {
            held.give_back(handle);
        }
    }

    /// `(free, total)` as the client is told them, from the card's.
    pub fn report(&self, card_free: u64, card_total: u64) -> (u64, u64) {
        if !self.is_set() {
            return (card_free, card_total);
        }
        let total = self.limit.min(card_total);
        let left = total.saturating_sub(self.held().total);
        (left.min(card_free), total)
    }
}

/// A client's context quota (`vgpu-host --client-contexts N`): how many contexts its
/// `cuCtxCreate` calls may hold at once. Each context costs device memory the memory quota does
/// not see (hundreds of MiB with a large local-memory reserve), so a bound on them bounds that.
/// One past the quota gets `CUDA_ERROR_OUT_OF_MEMORY`, as the driver answers when contexts no
/// longer fit. Primary contexts (one per device) and green contexts are not counted.
#[derive(Debug, Default)]
pub struct ContextQuota {
    limit: usize,
    held: Mutex<(usize, std::collections::HashSet<u64>)>,
    /// Contexts refused (statistics: `accounting/`).
    refused: AtomicU64,
}

impl ContextQuota {
    /// A quota of `limit` contexts (0: none).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Contexts the client holds (creations under way included).
    pub fn held(&self) -> usize {
        let held = self.lock();
        held.0 + held.1.len()
    }

    /// Contexts refused so far.
    pub fn refusals(&self) -> u64 {
        // SYNC POINT: Relaxed: a statistic, pairs with the Relaxed increment in `reserve`.
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, std::collections::HashSet<u64>)> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves room for one context about to be created.
    ///
    /// # Errors
    /// `CUDA_ERROR_OUT_OF_MEMORY` when the client holds its quota of contexts already.
    pub fn reserve(&self) -> Result<Reservation, CUresult> {
        let mut held = self.lock();
        if self.limit != 0 && held.0 + held.1.len() >= self.limit {
            tracing::info!(
                limit = self.limit,
                "context refused: the client holds its quota"
            );
            // SYNC POINT: Relaxed: a statistic, read Relaxed by `refusals`.
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        held.0 += 1;
        Ok(Reservation(1))
    }

    /// The context was created (`Some`) or not (`None`).
    pub fn settle(&self, r: Reservation, made: Option<u64>) {
        let mut held = self.lock();
        held.0 -= r.0 as usize;
        if let Some(ctx) = made {
            held.1.insert(ctx);
        }
    }

    /// Context `ctx` was destroyed.
    pub fn destroyed(&self, ctx: u64) {
        self.lock().1.remove(&ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_past_the_quota_are_refused_and_frees_give_room_back() {
        let q = MemoryQuota::new(100);
        let a = q.reserve(60).expect("fits");
        q.commit(a, 0x1000, 64);
        assert_eq!(
            q.reserve(40).map(|_| ()),
            Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY)
        );
        let b = q.reserve(36).expect("fits exactly");
        q.cancel(b);
        assert_eq!(q.report(1 << 30, 1 << 40), (36, 100));
        q.release(0x1000);
        q.release(0x1000);
        assert_eq!(q.report(1 << 30, 1 << 40), (100, 100));
        // Never more free than the card has, never more total than it has.
        assert_eq!(q.report(10, 50), (10, 50));
        assert!(q.reserve(u64::MAX).is_err());
    }

    #[test]
    fn a_vmm_allocation_is_held_until_released_and_unmapped() {
        let q = MemoryQuota::new(100);
        let r = q.reserve(64).expect("fits");
        q.commit(r, 0xa1, 64);
        q.mapped(0x7000_0000, 0xa1);
        q.mapped(0x7100_0000, 0xa1);
        // Released while mapped twice: still held.
        q.handle_released(0xa1);
        assert_eq!(q.held_bytes(), 64);
        // An unmap that covers one mapping; an unmap of nothing mapped changes nothing.
        q.unmapped(0x7000_0000, 0x10_0000);
        q.unmapped(0x1000, 0x1000);
        assert_eq!(q.held_bytes(), 64);
        q.unmapped(0x7100_0000, 0x10_0000);
        assert_eq!(q.held_bytes(), 0);
        // Unmapped first, released after: given back at the release.
        let r = q.reserve(32).expect("fits");
        q.commit(r, 0xa2, 32);
        q.mapped(0x7000_0000, 0xa2);
        q.unmapped(0x6000_0000, 0x2000_0000);
        assert_eq!(q.held_bytes(), 32);
        q.handle_released(0xa2);
        assert_eq!(q.held_bytes(), 0);
    }

    #[test]
    fn contexts_past_the_quota_are_refused_until_one_is_destroyed() {
        let q = ContextQuota::new(2);
        let a = q.reserve().expect("first");
        let b = q.reserve().expect("second");
        assert_eq!(
            q.reserve().map(|_| ()),
            Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY)
        );
        q.settle(a, Some(0xc1));
        q.settle(b, None);
        let c = q.reserve().expect("the failed one gave its room back");
        q.settle(c, Some(0xc2));
        assert!(q.reserve().is_err());
        q.destroyed(0xc1);
        assert!(q.reserve().is_ok());
        let unlimited = ContextQuota::default();
        for _ in 0..100 {
            let r = unlimited.reserve().expect("no quota");
            unlimited.settle(r, Some(1));
        }
    }

    #[test]
    fn without_a_limit_the_card_is_reported() {
        let q = MemoryQuota::default();
        assert!(!q.is_set());
        assert_eq!(q.report(7, 9), (7, 9));
    }
}
