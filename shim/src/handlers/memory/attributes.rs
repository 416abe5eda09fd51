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

/// The value of `attribute` for byte `at` of the managed allocation `[base, base + len)`, when
/// the guest knows it: one pointer for both sides, memory type DEVICE (what the driver is
/// expected to answer for managed memory; cudart then reports `cudaMemoryTypeManaged` from
/// `IS_MANAGED`; `tests/gpu/managed.c` prints it for a comparison on a GPU).
pub(crate) fn managed_attribute(
    base: u64,
    len: u64,
    at: u64,
    attribute: CUpointer_attribute,
) -> Option<(u64, usize)> {
    use CUpointer_attribute as A;
    Some(match attribute {
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => (u64::from(CUmemorytype::CU_MEMORYTYPE_DEVICE.0), 4),
        A::CU_POINTER_ATTRIBUTE_HOST_POINTER | A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => (at, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => (base, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_SIZE => (len, 8),
        A::CU_POINTER_ATTRIBUTE_MAPPED | A::CU_POINTER_ATTRIBUTE_IS_MANAGED => (1, 4),
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
/// host pointer, range and, for zero-copy blocks, the device alias) and managed memory
/// ([`managed_attribute`]); the rest of a zero-copy block's or managed allocation's attributes
/// (context, device ordinal, …) come from the host for its device address.
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
    if let Some((base, len)) = crate::handlers::managed::range(ptr) {
        // Managed memory: what the guest knows, else the host's driver at the same address.
        if let Some((value, size)) = managed_attribute(base, len, ptr, attribute) {
            // SAFETY: `data` holds the attribute's value, `size` bytes.
            unsafe { write_value(data, value, size) };
            return Ok(());
        }
    } else if let Some((pinned, at, alias)) = pinned_byte(ptr) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_memory_is_one_device_pointer_for_both_sides() {
        use CUpointer_attribute as A;
        let at = |a| managed_attribute(0x7000, 4096, 0x7010, a);
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_IS_MANAGED), Some((1, 4)));
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE), Some((2, 4)));
        assert_eq!(
            at(A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER),
            Some((0x7010, 8))
        );
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_HOST_POINTER), Some((0x7010, 8)));
        assert_eq!(
            at(A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR),
            Some((0x7000, 8))
        );
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_RANGE_SIZE), Some((4096, 8)));
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_MAPPED), Some((1, 4)));
        assert_eq!(at(A::CU_POINTER_ATTRIBUTE_CONTEXT), None, "the host's");
    }
}
