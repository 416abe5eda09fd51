//! Device queries answered as strings. Host halves: `host/src/dispatch/handlers/device.rs`.
#![allow(non_snake_case)]

use std::ffi::{c_char, CStr};

use cuda_headers::*;

use crate::forward::{bad_response, call_with};

fn string_query(id: u32, out: *mut c_char, len: i32, dev: CUdevice) -> CuResult {
    if out.is_null() || len <= 0 {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(len);
            enc.put(dev);
        },
        |dec| {
            let bytes = dec.get_bytes().map_err(bad_response)?;
            let n = bytes.len().min(len as usize);
            // SAFETY: `out` holds `len` bytes (driver API contract) and `n <= len`.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), n) };
            Ok(())
        },
    )
}

/// The device's name.
///
/// # Safety
/// `name` holds `len` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetName(name: *mut c_char, len: i32, dev: CUdevice) -> CuResult {
    string_query(shim_macros::cuda_call_id!(cuDeviceGetName), name, len, dev)
}

/// The device's PCI bus id.
///
/// # Safety
/// `pciBusId` holds `len` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetPCIBusId(pciBusId: *mut c_char, len: i32, dev: CUdevice) -> CuResult {
    string_query(
        shim_macros::cuda_call_id!(cuDeviceGetPCIBusId),
        pciBusId,
        len,
        dev,
    )
}

/// The host device with a PCI bus id (visibility is applied in `devices.rs`).
///
/// # Safety
/// `pciBusId` is NUL-terminated; `dev` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn pci_lookup(dev: *mut CUdevice, pciBusId: *const c_char) -> CuResult {
    if dev.is_null() || pciBusId.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let id = unsafe { CStr::from_ptr(pciBusId) }.to_bytes();
    call_with(
        shim_macros::cuda_call_id!(cuDeviceGetByPCIBusId),
        |enc| enc.put_bytes(id),
        |dec| {
            let d: i32 = dec.get().map_err(bad_response)?;
            // SAFETY: checked non-NULL above.
            unsafe { dev.write(d) };
            Ok(())
        },
    )
}
