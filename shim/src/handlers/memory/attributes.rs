//! Pointer attributes of pinned guest memory, answered in the guest (`cuPointerGetAttribute`).

#![allow(non_snake_case)]

use super::*;

/// The value of `attribute` for a pinned byte, when the guest knows it: (value, size in bytes).
/// `at` is the guest address asked about; for a zero-copy byte, `alias` is its device alias.
pub(crate) fn pinned_attribute(
    pinned: &Pinned,
    at: usize,
    alias: Option<u64>,
    attribute: CUpointer_attribute,
) -> Option<(u64, usize)> {
    use CUpointer_attribute as A;
    Some(match attribute {
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => (u64::from(CUmemorytype::CU_MEMORYTYPE_HOST.0), 4),
        A::CU_POINTER_ATTRIBUTE_HOST_POINTER => (at as u64, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => (pinned.base as u64, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_SIZE => (pinned.len as u64, 8),
        A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => (alias?, 8),
        A::CU_POINTER_ATTRIBUTE_MAPPED => (u64::from(alias.is_some()), 4),
        A::CU_POINTER_ATTRIBUTE_IS_MANAGED => (0, 4),
        _ => return None,
    })
}

/// Writes the low `size` bytes of `value` to `data`.
///
/// # Safety
/// `data` is valid for `size` (≤ 8) bytes of writes.
pub(crate) unsafe fn write_value(data: *mut c_void, value: u64, size: usize) {
    // SAFETY: per the contract; `value` is 8 bytes, little-endian like the attribute.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&value as *const u64).cast::<u8>(),
            data.cast::<u8>(),
            size.min(8),
        )
    };
}

/// A pinned byte named by `ptr` (a guest address, or the device alias of a zero-copy byte):
/// the allocation, the guest address, and the device alias when it has one.
pub(crate) fn pinned_byte(ptr: CUdeviceptr) -> Option<(Pinned, usize, Option<u64>)> {
    let at = zero_copy::resolve(ptr, 1).map_or(ptr as usize, |r| r.guest);
    let pinned = pinned_containing(at)?;
    let alias = match pinned.zero_copy {
        Some(b) => Some(b.alias + (at - b.guest) as u64),
        None => crate::mirror::device_pointer(at),
    };
    Some((pinned, at, alias))
}

/// Pointer attributes: answered here for the guest's own pinned allocations (the memory type,
/// host pointer, range and, for zero-copy blocks, the device alias); the rest of a zero-copy
/// block's attributes (context, device ordinal, …) come from the host for its alias.
///
/// # Safety
/// `data` is valid for the attribute's value.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL or unknown attributes; the host's result.
pub unsafe fn cuPointerGetAttribute(
    data: *mut c_void,
    attribute: CUpointer_attribute,
    ptr: CUdeviceptr,
) -> CuResult {
    if data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut asked = ptr;
    if let Some((pinned, at, alias)) = pinned_byte(ptr) {
        if let Some((value, size)) = pinned_attribute(&pinned, at, alias, attribute) {
            // SAFETY: `data` holds the attribute's value, `size` bytes.
            unsafe { write_value(data, value, size) };
            return Ok(());
        }
        match alias {
            Some(alias) => asked = alias,
            None if attribute == CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => {
                return Err(CuError::NOT_SUPPORTED)
            }
            None => {}
        }
    }
    call_with(
        shim_macros::cuda_call_id!(cuPointerGetAttribute),
        |enc| {
            enc.put(attribute.0);
            enc.put(asked);
        },
        |dec| {
            let value = dec.get_bytes().map_err(bad_response)?;
            // SAFETY: the host sends exactly the attribute's size, which `data` holds.
            unsafe {
                std::ptr::copy_nonoverlapping(value.as_ptr(), data.cast::<u8>(), value.len())
            };
            Ok(())
        },
    )
}
