//! The bulk area through the region: blocks allocated per owner, read and written in bounds.

use super::*;

impl Region {
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
}
