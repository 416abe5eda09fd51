//! Managed memory (`cuMemAllocManaged`): one pointer that the guest's CPU and the GPU both
//! dereference, as natively. The driver's own managed memory would live in the host worker's
//! address space, so it is never asked for; instead:
//! - over the shared region, a bulk block that the host maps at this process's address of it
//!   and registers there (`zero_copy::alloc_managed`): the GPU reaches the same pages, no copy;
//! - over TCP, a mirror (`crate::mirror::alloc_managed`): the host's pinned memory and a guest
//!   buffer mapped at its device pointer, kept equal at synchronising calls.
//!
//! Everything else follows from the one address: copies and memsets through it are zero-copy
//! (region) or reach the mirror (TCP); pointer attributes say managed (`memory::attributes`);
//! `cuMemFree` frees both sides; `cuMemGetAddressRange` is answered here. A library's
//! `__managed__` variables (`cuLibraryGetManaged`) are the driver's managed memory in the host
//! worker, mirrored at the driver's address (`crate::mirror::library_managed`). Host half and wire
//! format: `host/src/dispatch/handlers/managed.rs`; rules and differences from native:
//! `docs/handlers.md`, "Managed memory".
#![allow(non_snake_case)]

use cuda_headers::*;

use super::zero_copy;
use crate::config::Transport;
use crate::forward::generated;
use crate::log::{log, Level};

/// `CU_MEM_ATTACH_GLOBAL` and `CU_MEM_ATTACH_HOST`: the attach modes an allocation may start in.
const ATTACH_GLOBAL: u32 = 0x1;
const ATTACH_HOST: u32 = 0x2;

/// Managed memory: see the module documentation.
///
/// # Safety
/// `dptr` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL `dptr`, a zero size or flags other than one attach
/// mode; `CUDA_ERROR_OUT_OF_MEMORY` when the region's bulk area, the client's memory quota or
/// (TCP) the mirrors' cap is spent, or (TCP) the address is taken here; the host's refusal.
pub unsafe fn cuMemAllocManaged(dptr: *mut CUdeviceptr, bytesize: usize, flags: u32) -> CuResult {
    let transport = crate::init::host_transport()?;
    if dptr.is_null() || bytesize == 0 || !(flags == ATTACH_GLOBAL || flags == ATTACH_HOST) {
        return Err(CuError::INVALID_VALUE);
    }
    let p = match transport {
        Transport::Region(_) => zero_copy::alloc_managed(bytesize, flags),
        Transport::Tcp(..) => crate::mirror::alloc_managed(bytesize, flags),
    }
    .inspect_err(|e| {
        log!(
            Level::Debug,
            "cuMemAllocManaged of {bytesize} bytes refused: {e:?}"
        );
    })?;
    // SAFETY: `dptr` is valid for one write (checked non-NULL; driver API contract).
    unsafe { dptr.write(p as CUdeviceptr) };
    Ok(())
}

/// A `__managed__` variable of a library (cudart asks for each at module registration and
/// then reads and writes it through the answered pointer): the host answers the driver's
/// pointer and size, and the variable is mirrored at that address (`crate::mirror::
/// library_managed`), on either transport.
///
/// # Safety
/// `name` is a NUL-terminated string; `dptr` and `bytes` are NULL or valid for one write each.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL `name`; `CUDA_ERROR_OUT_OF_MEMORY` past the managed
/// mirrors' cap; `CUDA_ERROR_NOT_SUPPORTED` when the address is taken in this process; the
/// host's refusal (a library that is not this client's: `CUDA_ERROR_INVALID_HANDLE`).
pub unsafe fn cuLibraryGetManaged(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    name: *const std::ffi::c_char,
) -> CuResult {
    if name.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: a NUL-terminated string (driver API contract).
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
    let (address, len) = crate::mirror::library_managed(library as u64, name)?;
    // SAFETY: (both) NULL or valid for one write, per the contract.
    unsafe {
        if !dptr.is_null() {
            dptr.write(address);
        }
        if !bytes.is_null() {
            bytes.write(len);
        }
    }
    Ok(())
}

/// Frees device memory; managed memory is forgotten here first (its host half is freed by the
/// same call on the host).
///
/// # Safety
/// `dptr` is not used afterwards.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemFree_v2(dptr: CUdeviceptr) -> CuResult {
    if let Some(result) = crate::mirror::free_managed(dptr as usize) {
        return result;
    }
    zero_copy::forget_managed(dptr as usize);
    // SAFETY: the generated forwarder only sends the value.
    unsafe { generated::cuMemFree_v2(dptr) }
}

/// The managed allocation holding `ptr`: (first byte, length the application asked for).
pub(crate) fn range(ptr: CUdeviceptr) -> Option<(u64, u64)> {
    if let Some(block) = zero_copy::containing(ptr as usize).filter(|b| b.managed) {
        return Some((block.guest as u64, block.len as u64));
    }
    crate::mirror::managed_range(ptr as usize).map(|(base, len)| (base as u64, len as u64))
}

/// Base and size of the allocation holding `dptr`: answered here for managed memory, by the
/// host otherwise.
///
/// # Safety
/// `pbase` and `psize` are NULL or valid for one write each.
///
/// # Errors
/// The host's result for memory that is not managed.
pub unsafe fn cuMemGetAddressRange_v2(
    pbase: *mut CUdeviceptr,
    psize: *mut usize,
    dptr: CUdeviceptr,
) -> CuResult {
    let Some((base, len)) = range(dptr) else {
        // SAFETY: per the contract; the forwarder writes only through non-NULL pointers.
        return unsafe { generated::cuMemGetAddressRange_v2(pbase, psize, dptr) };
    };
    // SAFETY: (both) NULL or valid for one write, per the contract.
    unsafe {
        if !pbase.is_null() {
            pbase.write(base);
        }
        if !psize.is_null() {
            psize.write(len as usize);
        }
    }
    Ok(())
}
