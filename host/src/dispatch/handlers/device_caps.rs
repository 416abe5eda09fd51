//! The 1D linear texture limit and atomic capabilities. Guest halves:
//! `shim/src/handlers/device_caps.rs`.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::ClientContext;

/// `cuDeviceGetTexture1DLinearMaxWidth`: `u32 format, u32 channels, i32 device` → result,
/// `u64 width`.
pub fn texture_1d_linear_max_width(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let format = CUarray_format(dec.get()?);
    let channels: u32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut width = 0usize;
    // SAFETY: a live local.
    let r = unsafe {
        real_or_unsupported!(cuDeviceGetTexture1DLinearMaxWidth, out)(
            &mut width, format, channels, dev,
        )
    };
    ResponseHeader::start(out, r.0).put(width as u64);
    Ok(())
}

/// `cuDeviceGetHostAtomicCapabilities`, `cuDeviceGetP2PAtomicCapabilities`: `u32 n, n × u32
/// operation, i32 device, i32 peer` → result, `n × u32 capabilities`.
pub fn atomic_capabilities(
    name: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let n: u32 = dec.get()?;
    if n > 1024 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let ops: Vec<CUatomicOperation> = (0..n)
        .map(|_| Ok(CUatomicOperation(dec.get()?)))
        .collect::<Result<_, DecodeError>>()?;
    let dev: i32 = dec.get()?;
    let peer: i32 = dec.get()?;
    dec.finish()?;
    let mut caps = vec![0u32; n as usize];
    // SAFETY: (both arms) both arrays hold `n` entries.
    let r = unsafe {
        if name == "cuDeviceGetHostAtomicCapabilities" {
            real_or_unsupported!(cuDeviceGetHostAtomicCapabilities, out)(
                caps.as_mut_ptr(),
                ops.as_ptr(),
                n,
                dev,
            )
        } else {
            real_or_unsupported!(cuDeviceGetP2PAtomicCapabilities, out)(
                caps.as_mut_ptr(),
                ops.as_ptr(),
                n,
                dev,
                peer,
            )
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        for c in caps {
            enc.put(c);
        }
    }
    Ok(())
}
