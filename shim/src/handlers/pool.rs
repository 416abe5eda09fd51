//! Memory pools (creation, access, attributes), graph-memory attributes of a device and
//! memory-range attributes: values whose size depends on the attribute. Host halves:
//! `host/src/dispatch/handlers/pool.rs`.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::arrays::{slice, write};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// Bytes of a `CUmemPool_attribute` value: `int` for the reuse flags, `cuuint64_t` for sizes.
pub(crate) fn pool_attribute_size(attr: CUmemPool_attribute) -> Option<usize> {
    match attr.0 {
        1..=3 => Some(4),
        4..=8 => Some(8),
        _ => None,
    }
}

/// Reads an attribute of `size` bytes: `u64 handle, u32 attr, u32 size` → result, `bytes`.
fn get_sized(id: u32, handle: u64, attr: u32, size: Option<usize>, value: *mut c_void) -> CuResult {
    let Some(size) = size else {
        log!(
            Level::Warn,
            "attribute {attr} has no known value size; refused"
        );
        return Err(CuError::INVALID_VALUE);
    };
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
            enc.put(size as u32);
        },
        |dec| {
            let bytes = dec.get_bytes().map_err(bad_response)?;
            if bytes.len() != size {
                return Err(CuError::UNKNOWN);
            }
            // SAFETY: the caller's value holds `size` bytes for this attribute (driver API
            // contract); `bytes` is the host's buffer.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.cast::<u8>(), size) };
            Ok(())
        },
    )
}

/// Writes an attribute of `size` bytes: `u64 handle, u32 attr, bytes value` → result.
fn set_sized(
    id: u32,
    handle: u64,
    attr: u32,
    size: Option<usize>,
    value: *const c_void,
) -> CuResult {
    let Some(size) = size else {
        log!(
            Level::Warn,
            "attribute {attr} has no known value size; refused"
        );
        return Err(CuError::INVALID_VALUE);
    };
    // SAFETY: the caller's value holds `size` bytes (driver API contract); NULL is refused.
    let bytes = unsafe { slice(value.cast::<u8>(), size) }?;
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
            enc.put_bytes(bytes);
        },
        |_| Ok(()),
    )
}

/// A pool attribute.
///
/// # Safety
/// `value` holds the attribute's value type.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for unknown attributes; the host's result.
pub unsafe fn cuMemPoolGetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CuResult {
    get_sized(
        shim_macros::cuda_call_id!(cuMemPoolGetAttribute),
        pool as u64,
        attr.0,
        pool_attribute_size(attr),
        value,
    )
}

/// Sets a pool attribute.
///
/// # Safety
/// `value` holds the attribute's value type.
///
/// # Errors
/// As [`cuMemPoolGetAttribute`].
pub unsafe fn cuMemPoolSetAttribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> CuResult {
    set_sized(
        shim_macros::cuda_call_id!(cuMemPoolSetAttribute),
        pool as u64,
        attr.0,
        pool_attribute_size(attr),
        value,
    )
}

/// A device's graph-memory attribute (every one is a `cuuint64_t`).
///
/// # Safety
/// `value` holds a `cuuint64_t`.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetGraphMemAttribute(
    device: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CuResult {
    get_sized(
        shim_macros::cuda_call_id!(cuDeviceGetGraphMemAttribute),
        device as u64,
        attr.0,
        Some(8),
        value,
    )
}

/// Resets a device's graph-memory high-water mark.
///
/// # Safety
/// `value` holds a `cuuint64_t`.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceSetGraphMemAttribute(
    device: CUdevice,
    attr: CUgraphMem_attribute,
    value: *mut c_void,
) -> CuResult {
    set_sized(
        shim_macros::cuda_call_id!(cuDeviceSetGraphMemAttribute),
        device as u64,
        attr.0,
        Some(8),
        value,
    )
}

/// Creates a pool: `CUmemPoolProps` with its Windows pointer cleared → `u64 pool`.
///
/// # Safety
/// `poolProps` is valid; `pool` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` for Windows security attributes; the host's result.
pub unsafe fn cuMemPoolCreate(
    pool: *mut CUmemoryPool,
    poolProps: *const CUmemPoolProps,
) -> CuResult {
    // SAFETY: per the contract.
    let mut props = unsafe { poolProps.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    if pool.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if !props.win32SecurityAttributes.is_null() {
        log!(
            Level::Warn,
            "cuMemPoolCreate: Windows security attributes do not cross to the host"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    props.win32SecurityAttributes = std::ptr::null_mut();
    call_with(
        shim_macros::cuda_call_id!(cuMemPoolCreate),
        // SAFETY: a plain C struct whose only pointer is NULL.
        |enc| unsafe { enc.put_raw(&props) },
        |dec| {
            write(
                pool,
                dec.get::<u64>().map_err(bad_response)? as usize as CUmemoryPool,
            );
            Ok(())
        },
    )
}

/// Access descriptors: `u64 target, u64 size, u32 n, n × CUmemAccessDesc` (plain data).
fn put_access(
    id: u32,
    target: u64,
    size: u64,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> CuResult {
    // SAFETY: per the driver API contract, `count` descriptors.
    let desc = unsafe { slice(desc, count) }?;
    call_with(
        id,
        |enc| {
            enc.put(target);
            enc.put(size);
            enc.put(desc.len() as u32);
            for d in desc {
                // SAFETY: a plain C struct (a location and flags).
                unsafe { enc.put_raw(d) };
            }
        },
        |_| Ok(()),
    )
}

/// Grants devices access to a pool.
///
/// # Safety
/// `map` holds `count` descriptors.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemPoolSetAccess(
    pool: CUmemoryPool,
    map: *const CUmemAccessDesc,
    count: usize,
) -> CuResult {
    put_access(
        shim_macros::cuda_call_id!(cuMemPoolSetAccess),
        pool as u64,
        0,
        map,
        count,
    )
}

/// Grants devices access to a mapped VMM range (`vmm.rs` uses it).
pub(crate) fn set_access(
    ptr: CUdeviceptr,
    size: usize,
    desc: *const CUmemAccessDesc,
    count: usize,
) -> CuResult {
    put_access(
        shim_macros::cuda_call_id!(cuMemSetAccess),
        ptr,
        size as u64,
        desc,
        count,
    )
}

/// Range attributes: `u64 ptr, u64 count, u32 n, n × (u32 attr, u64 size)` → result,
/// `n × bytes`.
///
/// # Safety
/// `data[i]` holds `sizes[i]` bytes.
unsafe fn range_attributes(
    id: u32,
    data: &[*mut c_void],
    sizes: &[usize],
    attrs: &[CUmem_range_attribute],
    ptr: CUdeviceptr,
    count: usize,
) -> CuResult {
    call_with(
        id,
        |enc| {
            enc.put(ptr);
            enc.put(count as u64);
            enc.put(attrs.len() as u32);
            for (a, s) in attrs.iter().zip(sizes) {
                enc.put(a.0);
                enc.put(*s as u64);
            }
        },
        |dec| {
            for (d, s) in data.iter().zip(sizes) {
                let bytes = dec.get_bytes().map_err(bad_response)?;
                if bytes.len() != *s || d.is_null() {
                    return Err(CuError::UNKNOWN);
                }
                // SAFETY: per the contract, `data[i]` holds `sizes[i]` bytes.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), d.cast::<u8>(), *s) };
            }
            Ok(())
        },
    )
}

/// One memory-range attribute.
///
/// # Safety
/// `data` holds `dataSize` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemRangeGetAttribute(
    data: *mut c_void,
    dataSize: usize,
    attribute: CUmem_range_attribute,
    devPtr: CUdeviceptr,
    count: usize,
) -> CuResult {
    if data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    unsafe {
        range_attributes(
            shim_macros::cuda_call_id!(cuMemRangeGetAttribute),
            &[data],
            &[dataSize],
            &[attribute],
            devPtr,
            count,
        )
    }
}

/// Several memory-range attributes.
///
/// # Safety
/// The arrays hold `numAttributes` entries; `data[i]` holds `dataSizes[i]` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemRangeGetAttributes(
    data: *mut *mut c_void,
    dataSizes: *mut usize,
    attributes: *mut CUmem_range_attribute,
    numAttributes: usize,
    devPtr: CUdeviceptr,
    count: usize,
) -> CuResult {
    // SAFETY: (three slices) per the contract, `numAttributes` entries each.
    let (d, s, a) = unsafe {
        (
            slice(data.cast_const(), numAttributes)?,
            slice(dataSizes.cast_const(), numAttributes)?,
            slice(attributes.cast_const(), numAttributes)?,
        )
    };
    if numAttributes == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    unsafe {
        range_attributes(
            shim_macros::cuda_call_id!(cuMemRangeGetAttributes),
            d,
            s,
            a,
            devPtr,
            count,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_attribute_sizes_follow_the_header() {
        use CUmemPool_attribute as A;
        assert_eq!(
            pool_attribute_size(A::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES),
            Some(4)
        );
        assert_eq!(
            pool_attribute_size(A::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES),
            Some(4)
        );
        assert_eq!(
            pool_attribute_size(A::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD),
            Some(8)
        );
        assert_eq!(
            pool_attribute_size(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH),
            Some(8)
        );
        assert_eq!(pool_attribute_size(CUmemPool_attribute(0)), None);
        assert_eq!(pool_attribute_size(CUmemPool_attribute(99)), None);
    }

    #[test]
    fn unknown_attributes_are_refused_before_sending() {
        let mut v = 0u64;
        let r = get_sized(0, 0, 99, None, (&mut v as *mut u64).cast());
        assert_eq!(r.err(), Some(CuError::INVALID_VALUE));
    }
}
