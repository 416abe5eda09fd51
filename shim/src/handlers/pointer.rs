//! `cuPointerGetAttributes`: guest pinned allocations are answered here (as the single form in
//! `memory.rs` does), everything else by the host in one call; for a zero-copy block the host
//! answers for its device alias and the guest then fills in what it knows better (memory type,
//! host pointer, range, device pointer). Host half: `host/src/dispatch/handlers/pointer.rs`.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::arrays::slice;
use super::memory::{cuPointerGetAttribute, pinned_attribute, pinned_byte, write_value};
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
    match pinned_byte(ptr) {
        Some((pinned, at, Some(alias))) => {
            if ask_host(attrs, slots, alias).is_err() {
                // The host could not say (a driver without the call): CUDA's defaults.
                for (&a, &slot) in attrs.iter().zip(slots) {
                    if !slot.is_null() {
                        // SAFETY: `slot` holds the attribute's value (per the contract).
                        unsafe { write_value(slot, 0, attribute_size(a)) };
                    }
                }
            }
            for (&a, &slot) in attrs.iter().zip(slots) {
                if let (Some((value, size)), false) = (
                    pinned_attribute(&pinned, at, Some(alias), a),
                    slot.is_null(),
                ) {
                    // SAFETY: `slot` holds the attribute's value (per the contract).
                    unsafe { write_value(slot, value, size) };
                }
            }
            return Ok(());
        }
        Some(_) => return plain_pinned(attrs, slots, ptr),
        None => {}
    }
    ask_host(attrs, slots, ptr)
}

/// Size of an attribute's value: 4 bytes for the 32-bit ones, else 8.
fn attribute_size(a: CUpointer_attribute) -> usize {
    if matches!(a.0, 2 | 6 | 8 | 9 | 10 | 13 | 15 | 16 | 21) {
        4
    } else {
        8
    }
}

/// Plain guest pinned memory: every attribute answered in the guest.
fn plain_pinned(
    attrs: &[CUpointer_attribute],
    slots: &[*mut c_void],
    ptr: CUdeviceptr,
) -> CuResult {
    {
        for (&a, &slot) in attrs.iter().zip(slots) {
            // SAFETY: `slot` holds the attribute's value (per the contract).
            if unsafe { cuPointerGetAttribute(slot, a, ptr) }.is_err() && !slot.is_null() {
                // Not answerable for guest memory: the default value, as CUDA gives.
                // SAFETY: as above, at least this many bytes for these attributes.
                unsafe { std::ptr::write_bytes(slot.cast::<u8>(), 0, attribute_size(a)) };
            }
        }
        Ok(())
    }
}

/// Every attribute of `ptr` from the host, in one call.
fn ask_host(attrs: &[CUpointer_attribute], slots: &[*mut c_void], ptr: CUdeviceptr) -> CuResult {
    call_with(
        shim_macros::cuda_call_id!(cuPointerGetAttributes),
        |enc| {
            enc.put(ptr);
            enc.put(attrs.len() as u32);
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
