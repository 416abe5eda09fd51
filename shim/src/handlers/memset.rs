//! Memsets whose destination is the guest's own pinned host memory (unified addressing lets
//! CUDA programs memset a `cuMemHostAlloc` buffer; XLA does). A zero-copy block is set by the
//! host through its device alias, on the stream; plain pinned memory is not on the GPU's side,
//! so such a memset runs here, after the stream reaches it. Every other memset is forwarded by
//! the generated marshalling: a zero-copy destination synchronously (CUDA's memsets of pinned
//! host memory are synchronous), a device destination posted (see [`crate::posted`]).
#![allow(non_snake_case, clippy::too_many_arguments)]

use cuda_headers::*;

use super::memory::linear::wait_for_stream;
use super::memory::pinned_containing;
use crate::forward::generated;

/// Fills `height` rows of `width` elements of `T`, `pitch` bytes apart, if the whole range is in
/// one plain guest pinned allocation (`Ok(None)`: done). Otherwise answers the address the host
/// should set: the device alias of a zero-copy destination, or `dst` itself when it is not
/// guest memory at all.
///
/// # Safety
/// The range is the caller's memset destination (driver API contract).
unsafe fn fill_guest<T: Copy>(
    dst: CUdeviceptr,
    pitch: usize,
    value: T,
    width: usize,
    height: usize,
    stream: Option<(CUstream, bool)>,
) -> CuResult<Option<CUdeviceptr>> {
    let Some(pinned) = pinned_containing(dst as usize) else {
        return Ok(Some(dst));
    };
    let (base, len) = (pinned.base, pinned.len);
    let size = std::mem::size_of::<T>();
    let row_bytes = width.checked_mul(size).ok_or(CuError::INVALID_VALUE)?;
    let span = height
        .checked_sub(1)
        .map_or(Some(0), |rows| {
            rows.checked_mul(pitch)
                .and_then(|n| n.checked_add(row_bytes))
        })
        .ok_or(CuError::INVALID_VALUE)?;
    if (dst as usize)
        .checked_add(span)
        .is_none_or(|end| end > base + len)
    {
        return Err(CuError::INVALID_VALUE);
    }
    if let Some(block) = pinned.zero_copy {
        return Ok(Some(block.alias + (dst - block.guest as u64)));
    }
    if let Some((stream, per_thread)) = stream {
        wait_for_stream(stream, per_thread)?;
    }
    for row in 0..height {
        let start = dst as usize + row * pitch;
        for i in 0..width {
            // SAFETY: inside the pinned allocation (checked above); the memset's alignment
            // rules are the caller's, so write unaligned to be safe anyway.
            unsafe { ((start + i * size) as *mut T).write_unaligned(value) };
        }
    }
    Ok(None)
}

macro_rules! memset_1d {
    ($($name:ident($t:ty) => sync),* $(,)?) => { $(
        /// Memset; guest pinned destinations are filled here.
        ///
        /// # Safety
        /// The driver API's contract.
        ///
        /// # Errors
        /// The host's result, or `CUDA_ERROR_INVALID_VALUE` for a range past a pinned buffer.
        pub unsafe fn $name(dstDevice: CUdeviceptr, value: $t, N: usize) -> CuResult {
            // SAFETY: per the contract.
            match unsafe { fill_guest(dstDevice, 0, value, N, 1, None) }? {
                // Device memory: may be posted (asynchronous to the host, as in CUDA).
                // SAFETY: forwarded as given.
                Some(to) if pinned_containing(dstDevice as usize).is_none() => crate::posted::allowing(|| unsafe { generated::$name(to, value, N) }),
                // SAFETY: forwarded, with a zero-copy destination named by its alias.
                Some(to) => unsafe { generated::$name(to, value, N) },
                None => Ok(()),
            }
        }
    )* };
}
macro_rules! memset_1d_async {
    ($($name:ident($t:ty, $per_thread:expr)),* $(,)?) => { $(
        /// Memset on a stream; guest pinned destinations are filled here once the stream gets
        /// to it.
        ///
        /// # Safety
        /// The driver API's contract.
        ///
        /// # Errors
        /// As the synchronous form.
        pub unsafe fn $name(dstDevice: CUdeviceptr, value: $t, N: usize, hStream: CUstream) -> CuResult {
            // SAFETY: per the contract.
            match unsafe { fill_guest(dstDevice, 0, value, N, 1, Some((hStream, $per_thread))) }? {
                // Device memory: may be posted (asynchronous to the host, as in CUDA).
                // SAFETY: forwarded as given.
                Some(to) if pinned_containing(dstDevice as usize).is_none() => crate::posted::allowing(|| unsafe { generated::$name(to, value, N, hStream) }),
                // SAFETY: forwarded, with a zero-copy destination named by its alias.
                Some(to) => unsafe { generated::$name(to, value, N, hStream) },
                None => Ok(()),
            }
        }
    )* };
}
macro_rules! memset_2d {
    ($($name:ident($t:ty)),* $(,)?) => { $(
        /// 2D memset; guest pinned destinations are filled here.
        ///
        /// # Safety
        /// The driver API's contract.
        ///
        /// # Errors
        /// As the 1D form.
        pub unsafe fn $name(dstDevice: CUdeviceptr, dstPitch: usize, value: $t, Width: usize, Height: usize) -> CuResult {
            // SAFETY: per the contract.
            match unsafe { fill_guest(dstDevice, dstPitch, value, Width, Height, None) }? {
                // Device memory: may be posted (asynchronous to the host, as in CUDA).
                // SAFETY: forwarded as given.
                Some(to) if pinned_containing(dstDevice as usize).is_none() => crate::posted::allowing(|| unsafe { generated::$name(to, dstPitch, value, Width, Height) }),
                // SAFETY: forwarded, with a zero-copy destination named by its alias.
                Some(to) => unsafe { generated::$name(to, dstPitch, value, Width, Height) },
                None => Ok(()),
            }
        }
    )* };
}
macro_rules! memset_2d_async {
    ($($name:ident($t:ty, $per_thread:expr)),* $(,)?) => { $(
        /// 2D memset on a stream; guest pinned destinations are filled here.
        ///
        /// # Safety
        /// The driver API's contract.
        ///
        /// # Errors
        /// As the 1D form.
        pub unsafe fn $name(dstDevice: CUdeviceptr, dstPitch: usize, value: $t, Width: usize, Height: usize, hStream: CUstream) -> CuResult {
            // SAFETY: per the contract.
            match unsafe { fill_guest(dstDevice, dstPitch, value, Width, Height, Some((hStream, $per_thread))) }? {
                // Device memory: may be posted (asynchronous to the host, as in CUDA).
                // SAFETY: forwarded as given.
                Some(to) if pinned_containing(dstDevice as usize).is_none() => crate::posted::allowing(|| unsafe { generated::$name(to, dstPitch, value, Width, Height, hStream) }),
                // SAFETY: forwarded, with a zero-copy destination named by its alias.
                Some(to) => unsafe { generated::$name(to, dstPitch, value, Width, Height, hStream) },
                None => Ok(()),
            }
        }
    )* };
}

memset_1d!(
    cuMemsetD8_v2(u8) => sync, cuMemsetD8_v2_ptds(u8) => sync,
    cuMemsetD16_v2(u16) => sync, cuMemsetD16_v2_ptds(u16) => sync,
    cuMemsetD32_v2(u32) => sync, cuMemsetD32_v2_ptds(u32) => sync,
);
memset_1d_async!(
    cuMemsetD8Async(u8, false),
    cuMemsetD8Async_ptsz(u8, true),
    cuMemsetD16Async(u16, false),
    cuMemsetD16Async_ptsz(u16, true),
    cuMemsetD32Async(u32, false),
    cuMemsetD32Async_ptsz(u32, true),
);
memset_2d!(
    cuMemsetD2D8_v2(u8),
    cuMemsetD2D8_v2_ptds(u8),
    cuMemsetD2D16_v2(u16),
    cuMemsetD2D16_v2_ptds(u16),
    cuMemsetD2D32_v2(u32),
    cuMemsetD2D32_v2_ptds(u32),
);
memset_2d_async!(
    cuMemsetD2D8Async(u8, false),
    cuMemsetD2D8Async_ptsz(u8, true),
    cuMemsetD2D16Async(u16, false),
    cuMemsetD2D16Async_ptsz(u16, true),
    cuMemsetD2D32Async(u32, false),
    cuMemsetD2D32Async_ptsz(u32, true),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_guest_pinned_rows_and_refuses_overruns() {
        let mut buffer = vec![0u8; 64];
        let p = buffer.as_mut_ptr();
        assert!(super::super::memory::register_pinned(p as usize, 64, 0));
        let base = p as CUdeviceptr;
        // SAFETY: inside the 64-byte allocation.
        let filled = unsafe { fill_guest(base, 16, 0xABu8, 4, 3, None) };
        assert_eq!(filled, Ok(None));
        // SAFETY: the allocation is 64 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, 64) };
        assert_eq!(&bytes[0..4], &[0xAB; 4]);
        assert_eq!(&bytes[16..20], &[0xAB; 4]);
        assert_eq!(&bytes[32..36], &[0xAB; 4]);
        assert_eq!(bytes[4], 0);
        // SAFETY: the range check refuses before writing.
        let overrun = unsafe { fill_guest(base + 60, 0, 7u32, 2, 1, None) };
        assert_eq!(overrun, Err(CuError::INVALID_VALUE));
        // SAFETY: not guest memory: nothing is written.
        let elsewhere = unsafe { fill_guest(0x1000, 0, 1u8, 1, 1, None) };
        assert_eq!(elsewhere, Ok(Some(0x1000)));
        assert!(super::super::memory::unregister_pinned(p as usize));
    }
}
