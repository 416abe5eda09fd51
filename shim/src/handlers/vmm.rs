//! Virtual memory management: physical allocations, granularity, properties, access. Address
//! reservation, mapping, unmapping and release are generated forwarders; with these the whole
//! VMM path is forwarded, so `CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED` is the
//! device's own answer. Shareable handles (file descriptors, Windows handles, fabric handles)
//! do not cross to the host: `cuMemExportToShareableHandle`/`cuMemImportFromShareableHandle`
//! stay `CUDA_ERROR_NOT_SUPPORTED`. Host halves: `host/src/dispatch/handlers/vmm.rs`.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::arrays::write;
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// The properties with their Windows pointer checked and cleared.
fn props(prop: *const CUmemAllocationProp) -> CuResult<CUmemAllocationProp> {
    // SAFETY: the caller passes a valid descriptor (driver API contract).
    let mut p = unsafe { prop.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    if !p.win32HandleMetaData.is_null() {
        log!(
            Level::Warn,
            "VMM: Windows handle metadata does not cross to the host"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    p.win32HandleMetaData = std::ptr::null_mut();
    Ok(p)
}

/// Creates physical memory: `u64 size, CUmemAllocationProp, u64 flags` → `u64 handle`.
///
/// # Safety
/// `prop` is valid; `handle` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemCreate(
    handle: *mut CUmemGenericAllocationHandle,
    size: usize,
    prop: *const CUmemAllocationProp,
    flags: u64,
) -> CuResult {
    let p = props(prop)?;
    if handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuMemCreate),
        |enc| {
            enc.put(size as u64);
            // SAFETY: a plain C struct whose one pointer is NULL.
            unsafe { enc.put_raw(&p) };
            enc.put(flags);
        },
        |dec| {
            write(handle, dec.get::<u64>().map_err(bad_response)?);
            Ok(())
        },
    )
}

/// Allocation granularity: `CUmemAllocationProp, u32 option` → `u64 granularity`.
///
/// # Safety
/// `prop` is valid; `granularity` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemGetAllocationGranularity(
    granularity: *mut usize,
    prop: *const CUmemAllocationProp,
    option: CUmemAllocationGranularity_flags,
) -> CuResult {
    let p = props(prop)?;
    if granularity.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuMemGetAllocationGranularity),
        |enc| {
            // SAFETY: as in cuMemCreate.
            unsafe { enc.put_raw(&p) };
            enc.put(option.0);
        },
        |dec| {
            write(
                granularity,
                dec.get::<u64>().map_err(bad_response)? as usize,
            );
            Ok(())
        },
    )
}

/// The properties an allocation was made with: `u64 handle` → `CUmemAllocationProp`.
///
/// # Safety
/// `prop` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemGetAllocationPropertiesFromHandle(
    prop: *mut CUmemAllocationProp,
    handle: CUmemGenericAllocationHandle,
) -> CuResult {
    if prop.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuMemGetAllocationPropertiesFromHandle),
        |enc| enc.put(handle),
        |dec| {
            // SAFETY: the host sends one CUmemAllocationProp with its pointer cleared.
            write(
                prop,
                unsafe { dec.get_raw::<CUmemAllocationProp>() }.map_err(bad_response)?,
            );
            Ok(())
        },
    )
}

/// The allocation handle behind a mapped device address (`addr` is a device address here).
///
/// # Safety
/// `handle` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemRetainAllocationHandle(
    handle: *mut CUmemGenericAllocationHandle,
    addr: *mut c_void,
) -> CuResult {
    if handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuMemRetainAllocationHandle),
        |enc| enc.put(addr as u64),
        |dec| {
            write(handle, dec.get::<u64>().map_err(bad_response)?);
            Ok(())
        },
    )
}

/// Sets access to a mapped range (wire format in `pool.rs`).
///
/// # Safety
/// `desc` holds `count` descriptors.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemSetAccess(
    ptr: CUdeviceptr,
    size: usize,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> CuResult {
    super::pool::set_access(ptr, size, desc, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_metadata_is_refused_and_the_rest_kept() {
        // SAFETY: all-zero is valid for this plain struct.
        let mut p: CUmemAllocationProp = unsafe { std::mem::zeroed() };
        p.location.id = 3;
        assert_eq!(props(&p).unwrap().location.id, 3);
        p.win32HandleMetaData = 8usize as *mut c_void;
        assert_eq!(props(&p).err(), Some(CuError::NOT_SUPPORTED));
        assert_eq!(props(std::ptr::null()).err(), Some(CuError::INVALID_VALUE));
    }
}
