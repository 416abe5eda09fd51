//! `cuMemHostRegister`: guest memory cannot be mapped by the GPU (it lives in another process,
//! usually another machine's RAM). Registration therefore records the range in the same table
//! as `cuMemAllocHost` memory (`memory.rs`), which gives it pinned-memory semantics for copies:
//! asynchronous copies from it read it when the stream reaches them, as CUDA does. Device
//! pointers to it (`cuMemHostGetDevicePointer`) do not exist: `CUDA_ERROR_NOT_SUPPORTED`.
//! No host half: nothing is sent.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::memory::{register_pinned, unregister_pinned};
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
        return Err(
            CuError::new(CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED).expect("non-zero"),
        );
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
        Err(CuError::new(CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED).expect("non-zero"))
    }
}

fn no_device_pointer() -> CuResult {
    log!(
        Level::Warn,
        "cuMemHostGetDevicePointer: the GPU cannot map guest memory; there is no device pointer"
    );
    Err(CuError::NOT_SUPPORTED)
}

/// Not supported: the GPU cannot address guest memory.
///
/// # Safety
/// Always safe: nothing is read or written.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED`.
pub unsafe fn cuMemHostGetDevicePointer_v2(
    _pdptr: *mut CUdeviceptr,
    _p: *mut c_void,
    _Flags: u32,
) -> CuResult {
    no_device_pointer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::memory::pinned_containing;

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
        // SAFETY: registered pointers are never freed by cuMemFreeHost.
        assert!(unsafe { crate::handlers::memory::cuMemFreeHost(base as *mut c_void) }.is_err());
        // SAFETY: no memory is touched.
        unsafe { cuMemHostUnregister(base as *mut c_void) }.unwrap();
        // SAFETY: as above.
        unsafe { cuMemHostUnregister((base + 4096) as *mut c_void) }.unwrap();
        // SAFETY: as above.
        assert!(unsafe { cuMemHostUnregister(base as *mut c_void) }.is_err());
        assert!(pinned_containing(base + 100).is_none());
    }
}
