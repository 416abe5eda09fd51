//! `cuMemHostRegister`: arbitrary guest memory cannot be mapped by the GPU (it lives in another
//! process, usually another machine's RAM; only the shared region is seen by both sides).
//! Registration therefore records the range in the same table as plain `cuMemAllocHost` memory
//! (`memory.rs`), which gives it pinned-memory semantics for copies: asynchronous copies from it
//! read it when the stream reaches them, as CUDA does. Device pointers to it do not exist:
//! `cuMemHostGetDevicePointer` answers `CUDA_ERROR_NOT_SUPPORTED`. It answers the device alias
//! of zero-copy allocations (`zero_copy.rs`), which do live in the shared region, and the
//! device pointer of the host's stand-in for mirrored DEVICEMAP memory over TCP
//! (`crate::mirror`).
//! No host half: nothing is sent.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::memory::{pinned_containing, register_pinned, unregister_pinned};
use crate::log::{log, Level};

/// `CU_MEMHOSTREGISTER_IOMEMORY`: device memory of a third-party PCIe device.
const IOMEMORY: u32 = 0x04;

fn register(p: *mut c_void, bytesize: usize, flags: u32) -> CuResult {
    crate::init::host_transport()?;
    if p.is_null() || bytesize == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if flags & IOMEMORY != 0 {
        log!(
            Level::Warn,
            "cuMemHostRegister: I/O memory cannot be reached from the host GPU"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    if !register_pinned(p as usize, bytesize, flags) {
        return Err(CuError::HOST_MEMORY_ALREADY_REGISTERED);
    }
    Ok(())
}

/// Registers guest memory as pinned (for copy semantics only).
///
/// # Safety
/// `p` holds `bytesize` bytes while registered.
///
/// # Errors
/// `CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED` for overlapping ranges,
/// `CUDA_ERROR_NOT_SUPPORTED` for I/O memory.
pub unsafe fn cuMemHostRegister_v2(p: *mut c_void, bytesize: usize, Flags: u32) -> CuResult {
    register(p, bytesize, Flags)
}

/// As [`cuMemHostRegister_v2`].
///
/// # Safety
/// As [`cuMemHostRegister_v2`].
///
/// # Errors
/// As [`cuMemHostRegister_v2`].
pub unsafe fn cuMemHostRegister(p: *mut c_void, bytesize: usize, Flags: u32) -> CuResult {
    register(p, bytesize, Flags)
}

/// Forgets a registration.
///
/// # Safety
/// Always safe: the memory is not touched.
///
/// # Errors
/// `CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED` for anything else.
pub unsafe fn cuMemHostUnregister(p: *mut c_void) -> CuResult {
    if unregister_pinned(p as usize) {
        Ok(())
    } else {
        Err(CuError::HOST_MEMORY_NOT_REGISTERED)
    }
}

/// The device alias of guest pinned byte `p`.
fn device_pointer(p: *mut c_void, flags: u32) -> CuResult<u64> {
    if flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // Managed memory is not pinned host memory to the driver: it answers INVALID_VALUE
    // (`tests/gpu/managed.c`, H100, driver 580.159.04, 2026-12-06), also over the region,
    // where a managed allocation is a zero-copy block with a device alias.
    if crate::handlers::managed::range(p as CUdeviceptr).is_some() {
        return Err(CuError::INVALID_VALUE);
    }
    let pinned = pinned_containing(p as usize)
        .filter(|pinned| !pinned.zero_copy.is_some_and(|b| b.managed))
        .ok_or(CuError::INVALID_VALUE)?;
    match pinned.zero_copy {
        Some(block) => Ok(block.alias + (p as usize - block.guest) as u64),
        None => crate::mirror::device_pointer(p as usize).ok_or_else(|| {
            log!(
                Level::Warn,
                "cuMemHostGetDevicePointer: this pinned memory is plain guest memory (registered, or allocated when the shared region had no room), which the GPU cannot map"
            );
            CuError::NOT_SUPPORTED
        }),
    }
}

/// The device alias of zero-copy pinned memory.
///
/// # Safety
/// `pdptr` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL, non-zero flags or memory that is not pinned;
/// `CUDA_ERROR_NOT_SUPPORTED` for plain pinned memory (registered guest memory, or a fallback
/// allocation).
pub unsafe fn cuMemHostGetDevicePointer_v2(
    pdptr: *mut CUdeviceptr,
    p: *mut c_void,
    Flags: u32,
) -> CuResult {
    if pdptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let alias = device_pointer(p, Flags)?;
    // SAFETY: checked non-NULL; driver API contract.
    unsafe { pdptr.write(alias) };
    Ok(())
}

/// As [`cuMemHostGetDevicePointer_v2`], with the 32-bit device pointer of the original API.
///
/// # Safety
/// As [`cuMemHostGetDevicePointer_v2`].
///
/// # Errors
/// As [`cuMemHostGetDevicePointer_v2`]; `CUDA_ERROR_NOT_SUPPORTED` for an alias above 4 GiB.
pub unsafe fn cuMemHostGetDevicePointer(
    pdptr: *mut CUdeviceptr_v1,
    p: *mut c_void,
    Flags: u32,
) -> CuResult {
    if pdptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let alias = device_pointer(p, Flags)?;
    let Ok(narrow) = CUdeviceptr_v1::try_from(alias) else {
        log!(
            Level::Warn,
            "cuMemHostGetDevicePointer: the device alias does not fit the 32-bit form; use _v2"
        );
        return Err(CuError::NOT_SUPPORTED);
    };
    // SAFETY: checked non-NULL; driver API contract.
    unsafe { pdptr.write(narrow) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_ranges_behave_as_pinned_and_refuse_overlaps() {
        let mut buf = vec![0u8; 8192];
        let base = buf.as_mut_ptr() as usize;
        assert!(register_pinned(base, 4096, 1));
        assert!(pinned_containing(base + 100).is_some());
        assert!(
            !register_pinned(base + 2048, 4096, 0),
            "overlap from inside"
        );
        assert!(!register_pinned(base - 16, 32, 0), "overlap from before");
        assert!(register_pinned(base + 4096, 4096, 0), "adjacent is fine");
        use crate::handlers::memory::host_alloc::cuMemFreeHost;
        // SAFETY: registered pointers are never freed by cuMemFreeHost.
        assert!(unsafe { cuMemFreeHost(base as *mut c_void) }.is_err());
        // SAFETY: no memory is touched.
        unsafe { cuMemHostUnregister(base as *mut c_void) }.unwrap();
        // SAFETY: as above.
        unsafe { cuMemHostUnregister((base + 4096) as *mut c_void) }.unwrap();
        // SAFETY: as above.
        assert!(unsafe { cuMemHostUnregister(base as *mut c_void) }.is_err());
        assert!(pinned_containing(base + 100).is_none());
    }
}
