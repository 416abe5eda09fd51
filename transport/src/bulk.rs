//! The bulk area: fixed-size blocks, each with an owner word in the block table (0 = free).
//!
//! Blocks serve two purposes: transient chunks of large messages (allocated by the sender, freed by the
//! receiver after copying out, both owned by the channel's client token), and long-lived allocations
//! ([`crate::Region::bulk_alloc`]) for data that stays put, e.g. pinned host memory for zero-copy later.
//! Because every block names its owner, the host frees all of a dead client's blocks with
//! [`crate::Region::bulk_release_owner`].

use crate::error::TransportError;
use crate::region::Region;
use std::sync::atomic::Ordering;

/// A run of bulk blocks. Plain data: it may be sent to the peer (as offsets, never pointers), which
/// gets its own pointer with [`Region::bulk_ptr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkBlock {
    /// Byte offset inside the bulk area (a multiple of the block size).
    pub offset: u64,
    /// Usable length in bytes (the requested length rounded up to whole blocks).
    pub len: u64,
    /// Owner tag recorded in the block table.
    pub owner: u64,
}

/// First block index and block count of `offset..offset+len`, if it lies inside the bulk area on block
/// boundaries.
pub(crate) fn check_range(region: &Region, offset: u64, len: u64) -> Option<(usize, usize)> {
    let l = &region.inner.layout;
    let block = u64::from(l.bulk_block_size);
    // `block` is a power of two (validated at open).
    if len == 0 || offset & (block - 1) != 0 || offset.checked_add(len)? > l.bulk_size {
        return None;
    }
    Some(((offset / block) as usize, len.div_ceil(block) as usize))
}

/// Claims a run of free blocks covering `len` bytes for `owner`, or `None` when there is none.
/// `first_fit` searches from block 0 (message chunks: recently freed blocks are still in cache);
/// otherwise the search starts at the rotating hint (long-lived allocations).
pub(crate) fn alloc(region: &Region, len: u64, owner: u64, first_fit: bool) -> Option<BulkBlock> {
    let l = &region.inner.layout;
    let block = u64::from(l.bulk_block_size);
    let n = usize::try_from(len.div_ceil(block)).ok()?;
    let table = region.block_table();
    let blocks = table.len();
    if n == 0 || n > blocks {
        return None;
    }
    let hint = if first_fit {
        0
    } else {
        region.header().bulk_hint.load(Ordering::Relaxed) as usize % blocks
    };
    let mut i = hint;
    let mut scanned = 0usize;
    while scanned < blocks + n {
        if i + n > blocks {
            scanned += blocks - i;
            i = 0;
            continue;
        }
        let mut claimed = 0;
        // SYNC POINT: Acquire pairs with the Release store of 0 in `free`/`release_owner`/rollback: the
        // previous owner finished with the bytes before we reuse them.
        while claimed < n
            && table[i + claimed]
                .compare_exchange(0, owner, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            claimed += 1;
        }
        if claimed == n && first_fit {
            return Some(BulkBlock {
                offset: i as u64 * block,
                len: n as u64 * block,
                owner,
            });
        }
        if claimed == n {
            // SYNC POINT: a hint only; any value is safe (taken modulo the block count).
            region
                .header()
                .bulk_hint
                .store(((i + n) % blocks) as u32, Ordering::Relaxed);
            return Some(BulkBlock {
                offset: i as u64 * block,
                len: n as u64 * block,
                owner,
            });
        }
        for word in &table[i..i + claimed] {
            // SYNC POINT: pairs with the Acquire CAS above in another allocator.
            word.store(0, Ordering::Release);
        }
        i += claimed + 1;
        scanned += claimed + 1;
    }
    None
}

/// Frees `offset..offset+len` if every block in it is owned by `owner`.
pub(crate) fn free(
    region: &Region,
    offset: u64,
    len: u64,
    owner: u64,
) -> Result<(), TransportError> {
    let bad = TransportError::BadBlock { offset, len, owner };
    let (first, n) = check_range(region, offset, len).ok_or_else(|| bad_clone(&bad))?;
    let table = &region.block_table()[first..first + n];
    if owner == 0 || table.iter().any(|w| w.load(Ordering::Relaxed) != owner) {
        return Err(bad);
    }
    for word in table {
        // SYNC POINT: pairs with the Acquire CAS in `alloc`: our reads/writes of the block happen-before
        // the next owner's use.
        let _ = word.compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed);
    }
    Ok(())
}

fn bad_clone(e: &TransportError) -> TransportError {
    match e {
        TransportError::BadBlock { offset, len, owner } => TransportError::BadBlock {
            offset: *offset,
            len: *len,
            owner: *owner,
        },
        _ => TransportError::Corrupt("bulk block"),
    }
}

/// Frees every block owned by `owner`; returns how many.
pub(crate) fn release_owner(region: &Region, owner: u64) -> usize {
    if owner == 0 {
        return 0;
    }
    region
        .block_table()
        .iter()
        // SYNC POINT: pairs with the Acquire CAS in `alloc`.
        .filter(|w| {
            w.compare_exchange(owner, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        })
        .count()
}

/// Counts blocks owned by `owner` (diagnostics and tests).
pub(crate) fn owned_by(region: &Region, owner: u64) -> usize {
    region
        .block_table()
        .iter()
        .filter(|w| w.load(Ordering::Relaxed) == owner)
        .count()
}

impl Region {
    /// Number of bulk blocks currently owned by `owner` (diagnostics, tests).
    pub fn bulk_blocks_owned_by(&self, owner: u64) -> usize {
        owned_by(self, owner)
    }
}
