//! Copies between unified addresses (`cuMemcpy`, `cuMemcpyAsync`): each end is resolved to guest
//! memory, a zero-copy block or device memory, and the copy takes the matching path.

#![allow(non_snake_case)]

use super::attributes::cuPointerGetAttribute;
use super::linear::{copy_on_host, dtoh, htod, wait_for_stream};
use super::*;

/// Where a unified address lives, as far as the guest can tell. The device alias of a
/// zero-copy block is host-worker memory, never guest memory.
pub(crate) fn is_guest_memory(addr: CUdeviceptr) -> CuResult<bool> {
    if pinned_containing(addr as usize).is_some() {
        return Ok(true);
    }
    if zero_copy::is_alias(addr) {
        return Ok(false);
    }
    let mut kind: u32 = 0;
    // SAFETY: MEMORY_TYPE writes one u32.
    let r = unsafe {
        cuPointerGetAttribute(
            (&mut kind as *mut u32).cast(),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            addr,
        )
    };
    match r {
        // Unknown to the device: ordinary guest memory.
        Err(e) if e.code() == CUresult::CUDA_ERROR_INVALID_VALUE => Ok(true),
        Err(e) => Err(e),
        Ok(()) => Ok(kind == CUmemorytype::CU_MEMORYTYPE_HOST.0),
    }
}

/// One end of a unified-address copy.
enum Side {
    /// Device memory (or an address the guest cannot place: the host checks it).
    Device(CUdeviceptr),
    /// A zero-copy byte range, reachable from both sides.
    ZeroCopy(Resolved),
    /// Guest memory the GPU cannot reach.
    Guest(usize),
}

impl Side {
    fn of(addr: CUdeviceptr, len: usize) -> CuResult<Side> {
        if let Some(r) = zero_copy::resolve(addr, len) {
            return Ok(Side::ZeroCopy(r));
        }
        Ok(if is_guest_memory(addr)? {
            Side::Guest(addr as usize)
        } else {
            Side::Device(addr)
        })
    }

    /// The address the host copies with, when the GPU can reach this end.
    fn for_host(&self) -> Option<CUdeviceptr> {
        match self {
            Side::Device(a) => Some(*a),
            Side::ZeroCopy(r) => Some(r.alias),
            Side::Guest(_) => None,
        }
    }

    /// The guest address, when the guest can reach this end.
    fn in_guest(&self) -> Option<usize> {
        match self {
            Side::Device(_) => None,
            Side::ZeroCopy(r) => Some(r.guest),
            Side::Guest(a) => Some(*a),
        }
    }
}

fn unified(
    id: u32,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    stream: CUstream,
    per_thread: bool,
) -> CuResult {
    let (to, from) = (Side::of(dst, len)?, Side::of(src, len)?);
    // Both ends reachable by the GPU, at least one not plain guest memory: the host copies, on
    // the stream. Zero-copy to zero-copy goes there too, to stay in stream order.
    if let (Some(d), Some(s)) = (to.for_host(), from.for_host()) {
        return copy_on_host(id, d, s, len, stream);
    }
    let guest_pair = (to.in_guest(), from.in_guest());
    if let (Some(d), Some(s)) = guest_pair {
        if matches!(
            (&to, &from),
            (Side::ZeroCopy(_), _) | (_, Side::ZeroCopy(_))
        ) && !stream.is_null()
        {
            // The GPU may still be writing the zero-copy end: copy once the stream gets here.
            wait_for_stream(stream, per_thread)?;
        }
        // SAFETY: both are guest memory valid for `len` bytes (driver API contract); CUDA
        // allows overlapping host-to-host copies to behave as memmove.
        unsafe { std::ptr::copy(s as *const u8, d as *mut u8, len) };
        return Ok(());
    }
    let (dst_guest, src_guest) = (matches!(to, Side::Guest(_)), matches!(from, Side::Guest(_)));
    let (htod_id, dtoh_id) = match (stream.is_null(), per_thread) {
        (true, false) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoD_v2),
            shim_macros::cuda_call_id!(cuMemcpyDtoH_v2),
        ),
        (true, true) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoD_v2_ptds),
            shim_macros::cuda_call_id!(cuMemcpyDtoH_v2_ptds),
        ),
        (false, false) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoDAsync_v2),
            shim_macros::cuda_call_id!(cuMemcpyDtoHAsync_v2),
        ),
        (false, true) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoDAsync_v2_ptsz),
            shim_macros::cuda_call_id!(cuMemcpyDtoHAsync_v2_ptsz),
        ),
    };
    match (dst_guest, src_guest) {
        (false, true) => htod(
            htod_id,
            dst,
            src as usize as *const c_void,
            len,
            stream,
            (!stream.is_null()).then_some(per_thread),
            per_thread,
        ),
        (true, false) => dtoh(
            dtoh_id,
            dst as usize as *mut c_void,
            src,
            len,
            stream,
            !stream.is_null(),
            per_thread,
        ),
        // Both reachable by one side were handled above.
        _ => copy_on_host(id, dst, src, len, stream),
    }
}

/// Unified-address copy: routed by where each end lives.
///
/// # Safety
/// Guest ends are valid for `ByteCount` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpy),
        dst,
        src,
        ByteCount,
        std::ptr::null_mut(),
        false,
    )
}
/// As [`cuMemcpy`], per-thread default stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpy_ptds),
        dst,
        src,
        ByteCount,
        std::ptr::null_mut(),
        true,
    )
}
/// As [`cuMemcpy`], on a stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpyAsync(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpyAsync),
        dst,
        src,
        ByteCount,
        hStream,
        false,
    )
}
/// As [`cuMemcpyAsync`], per-thread default stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpyAsync_ptsz(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpyAsync_ptsz),
        dst,
        src,
        ByteCount,
        hStream,
        true,
    )
}
