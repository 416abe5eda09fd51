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
//! Counted is what the client asked for (a pitched allocation counts its pitch times its
//! height). What the driver takes for itself (contexts, module code, a memory pool's retained
//! blocks) is not counted.

use std::collections::HashMap;
use std::sync::Mutex;

use cuda_headers::CUresult;

/// One client's quota; a limit of 0 means none (nothing is counted).
#[derive(Debug, Default)]
pub struct MemoryQuota {
    limit: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Bytes reserved or held.
    total: u64,
    /// Size of each live allocation, by device address (or VMM handle).
    sizes: HashMap<u64, u64>,
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
        }
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
        let mut held = self.held();
        if let Some(size) = held.sizes.remove(&address) {
            held.total -= size;
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
    fn without_a_limit_the_card_is_reported() {
        let q = MemoryQuota::default();
        assert!(!q.is_set());
        assert_eq!(q.report(7, 9), (7, 9));
    }
}
