//! Device queries the classifier cannot describe: the 1D linear texture limit and atomic
//! capabilities (arrays with a count). Host halves: `host/src/dispatch/handlers/device_caps.rs`.
#![allow(non_snake_case)]

use cuda_headers::*;

use super::arrays::{slice, write, write_all};
use crate::forward::{bad_response, call_with};

/// The widest 1D linear texture for a format.
///
/// # Safety
/// `maxWidthInElements` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetTexture1DLinearMaxWidth(
    maxWidthInElements: *mut usize,
    format: CUarray_format,
    numChannels: u32,
    dev: CUdevice,
) -> CuResult {
    if maxWidthInElements.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuDeviceGetTexture1DLinearMaxWidth),
        |enc| {
            enc.put(format.0);
            enc.put(numChannels);
            enc.put(dev);
        },
        |dec| {
            write(
                maxWidthInElements,
                dec.get::<u64>().map_err(bad_response)? as usize,
            );
            Ok(())
        },
    )
}

/// `u32 n, n × u32 op, i32 dev, i32 peer` → result, `n × u32`.
///
/// # Safety
/// Both arrays hold `count` entries.
unsafe fn atomics(
    id: u32,
    caps: *mut u32,
    ops: *const CUatomicOperation,
    count: u32,
    dev: CUdevice,
    peer: CUdevice,
) -> CuResult {
    // SAFETY: per the contract.
    let ops = unsafe { slice(ops, count as usize) }?;
    if caps.is_null() && count > 0 {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(count);
            for o in ops {
                enc.put(o.0);
            }
            enc.put(dev);
            enc.put(peer);
        },
        |dec| {
            let got = (0..count)
                .map(|_| dec.get::<u32>().map_err(bad_response))
                .collect::<CuResult<Vec<_>>>()?;
            // SAFETY: per the contract, `count` entries.
            unsafe { write_all(caps, &got) };
            Ok(())
        },
    )
}

/// Atomic operations the device supports on host memory.
///
/// # Safety
/// Both arrays hold `count` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetHostAtomicCapabilities(
    capabilities: *mut u32,
    operations: *const CUatomicOperation,
    count: u32,
    dev: CUdevice,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        atomics(
            shim_macros::cuda_call_id!(cuDeviceGetHostAtomicCapabilities),
            capabilities,
            operations,
            count,
            dev,
            0,
        )
    }
}

/// Atomic operations supported between two devices.
///
/// # Safety
/// Both arrays hold `count` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDeviceGetP2PAtomicCapabilities(
    capabilities: *mut u32,
    operations: *const CUatomicOperation,
    count: u32,
    srcDevice: CUdevice,
    dstDevice: CUdevice,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        atomics(
            shim_macros::cuda_call_id!(cuDeviceGetP2PAtomicCapabilities),
            capabilities,
            operations,
            count,
            srcDevice,
            dstDevice,
        )
    }
}
