//! 2D and 3D copies: each end resolved, guest sub-boxes gathered or scattered, one exchange.

#![allow(non_snake_case)]

use super::linear::wait_for_stream;
use super::unified::is_guest_memory;
use super::*;

/// Resolves `UNIFIED` to `HOST` or `DEVICE`, moving the address to the matching field.
/// A device alias of a zero-copy block stays `UNIFIED`: it is host memory the GPU maps.
fn resolve(kind: &mut CUmemorytype, host: &mut usize, device: &mut CUdeviceptr) -> CuResult {
    if *kind == CUmemorytype::CU_MEMORYTYPE_UNIFIED && !zero_copy::is_alias(*device) {
        if is_guest_memory(*device)? {
            *kind = CUmemorytype::CU_MEMORYTYPE_HOST;
            *host = *device as usize;
        } else {
            *kind = CUmemorytype::CU_MEMORYTYPE_DEVICE;
        }
    }
    Ok(())
}

/// One end of a 2D/3D copy, after [`resolve`]: whether it is guest memory, and where its rows
/// are (a 2D copy is a 3D copy of depth 1 with `z = 0`).
struct End {
    guest: bool,
    base: usize,
    x: usize,
    y: usize,
    z: usize,
    pitch: usize,
    rows_per_slice: usize,
}

impl End {
    /// Address of row `row` of slice `slice`.
    fn row(&self, slice: usize, row: usize) -> usize {
        self.base
            + self.x
            + (self.y + row) * self.pitch
            + (self.z + slice) * self.rows_per_slice * self.pitch
    }

    /// First byte and length of the span `extent` touches, or `None` for an empty extent or
    /// arithmetic that overflows.
    fn bounds(&self, extent: Extent) -> Option<(usize, usize)> {
        if extent.width == 0 || extent.height == 0 || extent.depth == 0 {
            return None;
        }
        let slice = self.rows_per_slice.checked_mul(self.pitch)?;
        let start = self
            .base
            .checked_add(self.x)?
            .checked_add(self.y.checked_mul(self.pitch)?)?
            .checked_add(self.z.checked_mul(slice)?)?;
        let len = (extent.depth - 1)
            .checked_mul(slice)?
            .checked_add((extent.height - 1).checked_mul(self.pitch)?)?
            .checked_add(extent.width)?;
        start.checked_add(len)?;
        Some((start, len))
    }

    /// When this guest end lies wholly in one zero-copy block: the device alias its base
    /// address stands for, and the end becomes a GPU-side end (no rows travel).
    fn move_to_alias(&mut self, extent: Extent) -> Option<CUdeviceptr> {
        if !self.guest {
            return None;
        }
        let (start, len) = self.bounds(extent)?;
        let r = zero_copy::resolve(start as u64, len)?;
        self.guest = false;
        Some(r.alias.wrapping_sub((start - self.base) as u64))
    }
}

/// Rows of `width` bytes, `height` per slice, `depth` slices.
#[derive(Clone, Copy)]
struct Extent {
    width: usize,
    height: usize,
    depth: usize,
}

impl Extent {
    fn rows(self) -> impl Iterator<Item = (usize, usize)> {
        (0..self.depth).flat_map(move |slice| (0..self.height).map(move |row| (slice, row)))
    }
}

/// Gathers the source rows from guest memory, packed.
///
/// # Safety
/// Every row is readable (driver API contract for the copy descriptor).
unsafe fn gather(src: &End, extent: Extent) -> Vec<u8> {
    let mut out = Vec::with_capacity(extent.width * extent.height * extent.depth);
    for (slice, row) in extent.rows() {
        let at = src.row(slice, row);
        // SAFETY: per the contract, `width` bytes at `at` are readable.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(at as *const u8, extent.width) });
    }
    out
}

/// Scatters packed rows back into guest memory.
///
/// # Safety
/// Every row is writable.
unsafe fn scatter(data: &[u8], dst: &End, extent: Extent) {
    let mut chunks = data.chunks_exact(extent.width.max(1));
    for (slice, row) in extent.rows() {
        let Some(chunk) = chunks.next() else { return };
        let at = dst.row(slice, row);
        // SAFETY: per the contract, `width` bytes at `at` are writable.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), at as *mut u8, chunk.len()) };
    }
}

/// Sends a resolved 2D/3D descriptor with the guest source rows, and writes back the guest
/// destination rows. Plain pinned sources on a stream wait for the stream first; zero-copy ends
/// were turned into device-alias ends before and need no rows.
fn exchange<T: Copy>(
    id: u32,
    desc: &T,
    src: &End,
    dst: &End,
    extent: Extent,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    if let (Some(per_thread), true) = (
        on_stream,
        src.guest && pinned_containing(src.base).is_some(),
    ) {
        wait_for_stream(stream, per_thread)?;
    }
    call_with(
        id,
        |enc| {
            // SAFETY: the descriptor is a plain C struct; the host ignores its host pointers.
            unsafe { enc.put_raw(desc) };
            enc.put(stream as u64);
            if src.guest {
                // SAFETY: the descriptor promises readable source rows.
                enc.put_bytes(&unsafe { gather(src, extent) });
            }
        },
        |dec: &mut Decoder<'_>| {
            if dst.guest {
                let data = dec.get_bytes().map_err(bad_response)?;
                // SAFETY: the descriptor promises writable destination rows.
                unsafe { scatter(data, dst, extent) };
            }
            Ok(())
        },
    )
}

fn copy_2d(
    id: u32,
    copy: *const CUDA_MEMCPY2D,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    // SAFETY: the caller passes a valid descriptor (driver API contract).
    let mut c = unsafe { copy.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    let mut src_host = c.srcHost as usize;
    let mut dst_host = c.dstHost as usize;
    resolve(&mut c.srcMemoryType, &mut src_host, &mut c.srcDevice)?;
    resolve(&mut c.dstMemoryType, &mut dst_host, &mut c.dstDevice)?;
    let host = CUmemorytype::CU_MEMORYTYPE_HOST;
    let mut src = End {
        guest: c.srcMemoryType == host,
        base: src_host,
        x: c.srcXInBytes,
        y: c.srcY,
        z: 0,
        pitch: c.srcPitch,
        rows_per_slice: 0,
    };
    let mut dst = End {
        guest: c.dstMemoryType == host,
        base: dst_host,
        x: c.dstXInBytes,
        y: c.dstY,
        z: 0,
        pitch: c.dstPitch,
        rows_per_slice: 0,
    };
    let extent = Extent {
        width: c.WidthInBytes,
        height: c.Height,
        depth: 1,
    };
    let unified = CUmemorytype::CU_MEMORYTYPE_UNIFIED;
    if let Some(alias) = src.move_to_alias(extent) {
        (c.srcMemoryType, c.srcDevice, c.srcHost) = (unified, alias, std::ptr::null());
    }
    if let Some(alias) = dst.move_to_alias(extent) {
        (c.dstMemoryType, c.dstDevice, c.dstHost) = (unified, alias, std::ptr::null_mut());
    }
    exchange(id, &c, &src, &dst, extent, stream, on_stream)
}

fn copy_3d(
    id: u32,
    copy: *const CUDA_MEMCPY3D,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    // SAFETY: the caller passes a valid descriptor (driver API contract).
    let mut c = unsafe { copy.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    let mut src_host = c.srcHost as usize;
    let mut dst_host = c.dstHost as usize;
    resolve(&mut c.srcMemoryType, &mut src_host, &mut c.srcDevice)?;
    resolve(&mut c.dstMemoryType, &mut dst_host, &mut c.dstDevice)?;
    let host = CUmemorytype::CU_MEMORYTYPE_HOST;
    let mut src = End {
        guest: c.srcMemoryType == host,
        base: src_host,
        x: c.srcXInBytes,
        y: c.srcY,
        z: c.srcZ,
        pitch: c.srcPitch,
        rows_per_slice: c.srcHeight,
    };
    let mut dst = End {
        guest: c.dstMemoryType == host,
        base: dst_host,
        x: c.dstXInBytes,
        y: c.dstY,
        z: c.dstZ,
        pitch: c.dstPitch,
        rows_per_slice: c.dstHeight,
    };
    let extent = Extent {
        width: c.WidthInBytes,
        height: c.Height,
        depth: c.Depth,
    };
    let unified = CUmemorytype::CU_MEMORYTYPE_UNIFIED;
    if let Some(alias) = src.move_to_alias(extent) {
        (c.srcMemoryType, c.srcDevice, c.srcHost) = (unified, alias, std::ptr::null());
    }
    if let Some(alias) = dst.move_to_alias(extent) {
        (c.dstMemoryType, c.dstDevice, c.dstHost) = (unified, alias, std::ptr::null_mut());
    }
    exchange(id, &c, &src, &dst, extent, stream, on_stream)
}

/// The exported 2D/3D copies: `copy_fns!(DESCRIPTOR, copy_fn, [sync names], [async name: per_thread])`.
/// Host rows travel packed; the asynchronous forms complete before they return when they write
/// plain guest memory.
macro_rules! copy_fns {
    ($desc:ty, $copy:ident, [$($sync:ident),*], [$($async_name:ident: $per_thread:expr),*]) => {
        $(
            #[doc = concat!("`", stringify!($sync), "`: see [`", stringify!($copy), "`].")]
            ///
            /// # Safety
            /// `pCopy` is a valid descriptor whose host rows are accessible.
            ///
            /// # Errors
            /// The host's result.
            pub unsafe fn $sync(pCopy: *const $desc) -> CuResult {
                $copy(shim_macros::cuda_call_id!($sync), pCopy, std::ptr::null_mut(), None)
            }
        )*
        $(
            #[doc = concat!("`", stringify!($async_name), "`: see [`", stringify!($copy), "`].")]
            ///
            /// # Safety
            /// As for the synchronous form.
            ///
            /// # Errors
            /// The host's result.
            pub unsafe fn $async_name(pCopy: *const $desc, hStream: CUstream) -> CuResult {
                $copy(shim_macros::cuda_call_id!($async_name), pCopy, hStream, Some($per_thread))
            }
        )*
    };
}
copy_fns!(
    CUDA_MEMCPY2D,
    copy_2d,
    [cuMemcpy2D_v2, cuMemcpy2D_v2_ptds, cuMemcpy2DUnaligned_v2, cuMemcpy2DUnaligned_v2_ptds],
    [cuMemcpy2DAsync_v2: false, cuMemcpy2DAsync_v2_ptsz: true]
);
copy_fns!(
    CUDA_MEMCPY3D,
    copy_3d,
    [cuMemcpy3D_v2, cuMemcpy3D_v2_ptds],
    [cuMemcpy3DAsync_v2: false, cuMemcpy3DAsync_v2_ptsz: true]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_scatter_walk_the_same_sub_box() {
        // A 4-byte pitch, 3 rows a slice, 2 slices; the copy takes 2×2×2 bytes at (1, 1, 0).
        let source: Vec<u8> = (0..24).collect();
        let end = |base: usize| End {
            guest: true,
            base,
            x: 1,
            y: 1,
            z: 0,
            pitch: 4,
            rows_per_slice: 3,
        };
        let extent = Extent {
            width: 2,
            height: 2,
            depth: 2,
        };
        // SAFETY: every row of the box lies inside `source`.
        let packed = unsafe { gather(&end(source.as_ptr() as usize), extent) };
        assert_eq!(packed, [5, 6, 9, 10, 17, 18, 21, 22]);
        let mut target = vec![0u8; 24];
        // SAFETY: as above, for `target`.
        unsafe { scatter(&packed, &end(target.as_mut_ptr() as usize), extent) };
        let moved: Vec<usize> = (0..24).filter(|&i| target[i] != 0).collect();
        assert_eq!(moved, [5, 6, 9, 10, 17, 18, 21, 22]);
        assert!(moved.iter().all(|&i| target[i] == source[i]));
    }
}
