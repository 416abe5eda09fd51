//! `cuPointerGetAttributes`: guest pinned allocations and managed memory are answered here (as
//! the single form in `memory.rs` does), everything else by the host in one call; for a
//! zero-copy block or managed memory the host answers for its device address and the guest then
//! fills in what it knows better (memory type, host pointer, range, device pointer, managed).
//! The host's answers that hold for a pinned block's life are kept
//! (`zero_copy::kept_attribute`), so a repeated query of a block needs no round trip. Host half:
//! `host/src/dispatch/handlers/pointer.rs`.
#![allow(non_snake_case)]

use std::ffi::c_void;

use cuda_headers::*;

use super::arrays::slice;
use super::memory::attributes::{
    cuPointerGetAttribute, managed_attribute, pinned_attribute, pinned_byte,
};
use super::zero_copy;
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
    if let Some((base, len)) = super::managed::range(ptr) {
        // Managed memory: what the guest knows; the rest from the host at the same address.
        let known: Vec<Option<Vec<u8>>> = attrs
            .iter()
            .map(|&a| {
                managed_attribute(base, len, ptr, a)
                    .map(|(value, size)| value.to_le_bytes()[..size].to_vec())
            })
            .collect();
        let values = if known.iter().all(Option::is_some) {
            known.into_iter().flatten().collect()
        } else {
            let asked = ask_host_values(attrs, ptr)?;
            known
                .into_iter()
                .zip(asked)
                .map(|(known, asked)| known.unwrap_or(asked))
                .collect::<Vec<_>>()
        };
        write_values(slots, &values);
        return Ok(());
    }
    match pinned_byte(ptr) {
        Some((pinned, at, Some(alias))) => {
            let block = pinned.zero_copy.ok_or(CuError::UNKNOWN)?;
            // What the guest knows of each attribute, else what it kept from the host's first
            // answer for this block: when that covers every attribute, no round trip.
            let known: Vec<Option<Vec<u8>>> = attrs
                .iter()
                .map(|&a| {
                    pinned_attribute(&pinned, at, Some(alias), a)
                        .map(|(value, size)| value.to_le_bytes()[..size].to_vec())
                })
                .collect();
            let local = known
                .iter()
                .zip(attrs)
                .map(|(k, &a)| k.clone().or_else(|| zero_copy::kept_attribute(&block, a)))
                .collect::<Option<Vec<_>>>();
            let values = match local {
                Some(values) => values,
                None => {
                    let asked = ask_host_values(attrs, alias).unwrap_or_else(|_| {
                        // The host could not say (a driver without the call): CUDA's defaults.
                        attrs.iter().map(|&a| vec![0; attribute_size(a)]).collect()
                    });
                    known
                        .into_iter()
                        .zip(attrs)
                        .zip(asked)
                        .map(|((known, &a), asked)| {
                            known.unwrap_or_else(|| {
                                zero_copy::keep_attribute(&block, a, &asked);
                                asked
                            })
                        })
                        .collect()
                }
            };
            write_values(slots, &values);
            return Ok(());
        }
        Some(_) => return plain_pinned(attrs, slots, ptr),
        None => {}
    }
    let values = ask_host_values(attrs, ptr)?;
    write_values(slots, &values);
    Ok(())
}

/// Writes each attribute's value bytes to its slot (NULL slots are skipped).
fn write_values(slots: &[*mut c_void], values: &[Vec<u8>]) {
    for (&slot, value) in slots.iter().zip(values) {
        if !slot.is_null() {
            // SAFETY: `slot` holds the attribute's value (per the contract), which is exactly
            // `value.len()` bytes: the host sends the attribute's size, the guest's own values
            // are cut to it.
            unsafe {
                std::ptr::copy_nonoverlapping(value.as_ptr(), slot.cast::<u8>(), value.len())
            };
        }
    }
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

/// Every attribute of `ptr` from the host, in one call: each value's bytes, in order.
fn ask_host_values(attrs: &[CUpointer_attribute], ptr: CUdeviceptr) -> CuResult<Vec<Vec<u8>>> {
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
            attrs
                .iter()
                .map(|_| Ok(dec.get_bytes().map_err(bad_response)?.to_vec()))
                .collect()
        },
    )
}
