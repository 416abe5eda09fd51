//! Kernel-node attributes, which share their wire format with stream attributes.

#![allow(non_snake_case)]

use super::*;

/// Kernel-node and stream attributes share one value type: `u64 handle, u32 attr` (+ the
/// value for setters) → the 64-byte value.
pub(crate) fn get_attribute(
    id: u32,
    handle: u64,
    attr: u32,
    value: *mut CUlaunchAttributeValue,
) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
        },
        |dec| {
            // SAFETY: the host sends one CUlaunchAttributeValue (plain data: integers, device
            // addresses, handles).
            write(
                value,
                unsafe { dec.get_raw::<CUlaunchAttributeValue>() }.map_err(bad_response)?,
            );
            Ok(())
        },
    )
}

/// The setter of [`get_attribute`].
pub(crate) fn set_attribute(
    id: u32,
    handle: u64,
    attr: u32,
    value: *const CUlaunchAttributeValue,
) -> CuResult {
    // SAFETY: per the driver API contract, NULL or one value.
    let value = unsafe { value.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
            // SAFETY: plain data, as above.
            unsafe { enc.put_raw(value) };
        },
        |_| Ok(()),
    )
}

/// A kernel node's launch attribute.
///
/// # Safety
/// `value_out` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeGetAttribute(
    hNode: CUgraphNode,
    attr: CUkernelNodeAttrID,
    value_out: *mut CUkernelNodeAttrValue,
) -> CuResult {
    get_attribute(
        shim_macros::cuda_call_id!(cuGraphKernelNodeGetAttribute),
        hNode as u64,
        attr.0,
        value_out,
    )
}

/// Sets a kernel node's launch attribute.
///
/// # Safety
/// `value` is valid.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeSetAttribute(
    hNode: CUgraphNode,
    attr: CUkernelNodeAttrID,
    value: *const CUkernelNodeAttrValue,
) -> CuResult {
    set_attribute(
        shim_macros::cuda_call_id!(cuGraphKernelNodeSetAttribute),
        hNode as u64,
        attr.0,
        value,
    )
}
