//! `cuPointerGetAttributes`. Guest half: `shim/src/handlers/pointer.rs`.

use std::ffi::c_void;
use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::memory::{mint_attribute_handle, pointer_attribute_size};
use super::{real_or_unsupported, respond};
use crate::dispatch::ClientContext;

/// `cuPointerGetAttributes`: `u64 ptr, u32 n, n × u32 attr` → result, `n × bytes value`
/// (each the attribute's size). Unknown attributes are refused with `CUDA_ERROR_INVALID_VALUE`.
pub fn attributes(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let ptr: u64 = dec.get()?;
    let n = dec.get::<u32>()? as usize;
    if n > 64 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let attrs: Vec<u32> = (0..n).map(|_| dec.get()).collect::<Result<_, _>>()?;
    dec.finish()?;
    let mut values = Vec::with_capacity(n);
    for &a in &attrs {
        let Some(size) = pointer_attribute_size(a) else {
            tracing::warn!(attribute = a, "unknown pointer attribute");
            respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
            return Ok(());
        };
        values.push(vec![0u8; size]);
    }
    let mut kinds: Vec<CUpointer_attribute> =
        attrs.iter().map(|&a| CUpointer_attribute(a)).collect();
    let mut data: Vec<*mut c_void> = values.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
    // SAFETY: `data[i]` holds attribute `i`'s size; both arrays hold `n` entries.
    let r = unsafe {
        real_or_unsupported!(cuPointerGetAttributes, out)(
            n as u32,
            kinds.as_mut_ptr(),
            data.as_mut_ptr(),
            ptr,
        )
    };
    if r == CUresult::CUDA_SUCCESS {
        for (&a, v) in attrs.iter().zip(&values) {
            mint_attribute_handle(&client.handles, a, v);
        }
    }
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        for v in &values {
            enc.put_bytes(v);
        }
    }
    Ok(())
}
