//! Pinned host allocations (`cuMemAllocHost`, `cuMemHostAlloc`, `cuMemFreeHost`,
//! `cuMemHostGetFlags`): zero-copy blocks of the region when the host can place one.

#![allow(non_snake_case)]

use super::*;

const PAGE: usize = 4096;

fn alloc_host(pp: *mut *mut c_void, bytesize: usize, flags: u32) -> CuResult {
    crate::init::host_transport()?;
    if pp.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let wants_alias = flags & zero_copy::DEVICEMAP != 0;
    match zero_copy::alloc(bytesize, flags) {
        Ok(p) => {
            // SAFETY: `pp` is valid for one pointer write (checked non-NULL; driver API contract).
            unsafe { pp.write(p.cast()) };
            return Ok(());
        }
        Err(NotPlaced::Disabled) => {}
        Err(NotPlaced::OverTcp) if wants_alias => {
            // Over TCP the GPU cannot map guest memory: host-pinned memory on the worker stands
            // in for it, mirrored (`crate::mirror`).
            let p = crate::mirror::alloc(bytesize)?;
            pinned().insert(p as usize, (bytesize, flags));
            // SAFETY: `pp` is valid for one pointer write (checked non-NULL; driver API contract).
            unsafe { pp.write(p.cast()) };
            return Ok(());
        }
        Err(NotPlaced::OverTcp) => {
            // Natively pinned memory is mapped for the device even without DEVICEMAP (UVA);
            // small allocations are mirrored so that kernels may use them too.
            if let Some(p) = crate::mirror::alloc_implicit(bytesize) {
                pinned().insert(p as usize, (bytesize, flags));
                // SAFETY: `pp` is valid for one pointer write (checked non-NULL).
                unsafe { pp.write(p.cast()) };
                return Ok(());
            }
        }
        Err(NotPlaced::Refused(e)) if wants_alias => {
            log!(
                Level::Warn,
                "cuMemHostAlloc: cannot place {bytesize} bytes of DEVICEMAP memory in the shared region ({e:?}); grow the host's region (VGPU_REGION_SIZE / --region-size)"
            );
            return Err(CuError::OUT_OF_MEMORY);
        }
        Err(NotPlaced::Refused(e)) => zero_copy::report_fallback(e),
    }
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes `p` on success; the alignment is a power of two.
    let rc = unsafe { libc::posix_memalign(&mut p, PAGE, bytesize.max(1)) };
    if rc != 0 {
        return Err(CuError::OUT_OF_MEMORY);
    }
    pinned().insert(p as usize, (bytesize, flags));
    // SAFETY: `pp` is valid for one pointer write (checked non-NULL; driver API contract).
    unsafe { pp.write(p) };
    Ok(())
}

/// Pinned memory: a zero-copy block in the shared region the GPU maps, or page-aligned guest
/// memory when none can be placed (see [`zero_copy`]).
///
/// # Safety
/// `pp` is valid for one pointer write.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY`, `CUDA_ERROR_INVALID_VALUE`, `CUDA_ERROR_NOT_INITIALIZED`.
pub unsafe fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CuResult {
    alloc_host(pp, bytesize, 0)
}

/// As [`cuMemAllocHost_v2`], with the 32-bit size of the original API.
///
/// # Safety
/// As [`cuMemAllocHost_v2`].
///
/// # Errors
/// As [`cuMemAllocHost_v2`].
pub unsafe fn cuMemAllocHost(pp: *mut *mut c_void, bytesize: u32) -> CuResult {
    alloc_host(pp, bytesize as usize, 0)
}

/// As [`cuMemAllocHost_v2`], remembering `Flags`. With `CU_MEMHOSTALLOC_DEVICEMAP`, memory
/// that cannot be placed in the shared region fails (`CUDA_ERROR_OUT_OF_MEMORY`) instead of
/// falling back to memory without an alias; over TCP it is mirrored on the host
/// (`crate::mirror`; `CUDA_ERROR_NOT_SUPPORTED` past the mirrors' cap). Over TCP a small
/// allocation without the flag is mirrored too (`crate::mirror::alloc_implicit`).
///
/// # Safety
/// As [`cuMemAllocHost_v2`].
///
/// # Errors
/// As [`cuMemAllocHost_v2`].
pub unsafe fn cuMemHostAlloc(pp: *mut *mut c_void, bytesize: usize, Flags: u32) -> CuResult {
    alloc_host(pp, bytesize, Flags)
}

/// Frees memory from [`cuMemAllocHost_v2`]/[`cuMemHostAlloc`]. A zero-copy block is
/// unregistered on the host and returned to the bulk area.
///
/// # Safety
/// `p` came from one of them and is not used afterwards.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for any other pointer; the host's result for a zero-copy block.
pub unsafe fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    if let Some(result) = zero_copy::free(p as usize) {
        return result;
    }
    if let Some(result) = crate::mirror::free(p as usize) {
        pinned().remove(&(p as usize));
        return result;
    }
    {
        let mut map = pinned();
        match map.get(&(p as usize)) {
            Some(&(_, flags)) if flags & REGISTERED == 0 => map.remove(&(p as usize)),
            _ => return Err(CuError::INVALID_VALUE),
        };
    }
    // SAFETY: `p` came from posix_memalign and was just removed from the table.
    unsafe { libc::free(p) };
    Ok(())
}

/// What [`cuMemHostGetFlags`] answers for managed memory: `CU_MEMHOSTALLOC_DEVICEMAP`, as the
/// driver does (`tests/gpu/managed.c` on an H100, driver 580.159.04, 2026-12-06: `flags=2`
/// natively and through vgpu).
const MANAGED_HOST_FLAGS: u32 = 0x02;

/// The flags given to [`cuMemHostAlloc`]; for managed memory, [`MANAGED_HOST_FLAGS`].
///
/// # Safety
/// `pFlags` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for memory neither from it nor managed.
pub unsafe fn cuMemHostGetFlags(pFlags: *mut u32, p: *mut c_void) -> CuResult {
    if crate::handlers::managed::range(p as CUdeviceptr).is_some() {
        if pFlags.is_null() {
            return Err(CuError::INVALID_VALUE);
        }
        // SAFETY: checked non-NULL; driver API contract.
        unsafe { pFlags.write(MANAGED_HOST_FLAGS) };
        return Ok(());
    }
    let pinned = pinned_containing(p as usize)
        .filter(|pinned| !pinned.zero_copy.is_some_and(|b| b.managed))
        .ok_or(CuError::INVALID_VALUE)?;
    if pFlags.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: checked non-NULL; driver API contract.
    unsafe { pFlags.write(pinned.flags & !REGISTERED) };
    Ok(())
}
