//! `cuPointerGetAttributes`: guest pinned allocations are answered here (as the single form in
//! `memory.rs` does), everything else by the host in one call. Host half:
//! `host/src/dispatch/handlers/pointer.rs`.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::arrays::slice;
use super::memory::{cuPointerGetAttribute, pinned_containing};
use crate::forward::{bad_response, call_with};

/// Several attributes of one pointer. Unlike the single form, a pointer CUDA does not know
/// gets default (zero) values rather than an error.
///
/// # Safety
/// The arrays hold `numAttributes` entries; `data[i]` holds attribute `i`'s value.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL arrays; the host's result.
pub unsafe fn cuPointerGetAttributes(
    numAttributes: u32,
    attributes: *mut CUpointer_attribute,
    data: *mut *mut c_void,
    ptr: CUdeviceptr,
) -> CuResult {
    let n = numAttributes as usize;
    // SAFETY: (both) per the contract, `numAttributes` entries each.
    let (attrs, slots) = unsafe {
        (
            slice(attributes.cast_const(), n)?,
            slice(data.cast_const(), n)?,
        )
    };
    if n == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if pinned_containing(ptr as usize).is_some() {
        for (&a, &slot) in attrs.iter().zip(slots) {
            // SAFETY: `slot` holds the attribute's value (per the contract).
            if unsafe { cuPointerGetAttribute(slot, a, ptr) }.is_err() && !slot.is_null() {
                // Not answerable for guest memory: the default value, as CUDA gives.
                let size = if matches!(a.0, 2 | 6 | 8 | 9 | 10 | 13 | 15 | 16 | 21) {
                    4
                } else {
                    8
                };
                // SAFETY: as above, at least `size` bytes for these attributes.
                unsafe { std::ptr::write_bytes(slot.cast::<u8>(), 0, size) };
            }
        }
        return Ok(());
    }
    call_with(
        shim_macros::cuda_call_id!(cuPointerGetAttributes),
        |enc| {
            enc.put(ptr);
            enc.put(n as u32);
            for a in attrs {
                enc.put(a.0);
            }
        },
        |dec| {
            for &slot in slots {
                let value = dec.get_bytes().map_err(bad_response)?;
                if !slot.is_null() {
                    // SAFETY: the host sends exactly the attribute's size, which `slot` holds.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            value.as_ptr(),
                            slot.cast::<u8>(),
                            value.len(),
                        )
                    };
                }
            }
            Ok(())
        },
    )
}
