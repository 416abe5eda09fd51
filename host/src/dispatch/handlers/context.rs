//! Context creation with parameter structs that hold arrays.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::real_or_unsupported;
use crate::dispatch::ClientContext;

const MAX_AFFINITY: usize = 64;

fn affinity(dec: &mut Decoder<'_>) -> Result<Vec<CUexecAffinityParam>, DecodeError> {
    let count: u32 = dec.get()?;
    if count as usize > MAX_AFFINITY {
        return Err(DecodeError::BadTag {
            what: "affinity count",
            tag: u8::MAX,
        });
    }
    // SAFETY: CUexecAffinityParam is a plain C struct (an enum and a union of integers).
    (0..count).map(|_| unsafe { dec.get_raw() }).collect()
}

/// `cuCtxCreate_v3`: `u32 n, n × CUexecAffinityParam, u32 flags, i32 dev` → result, `u64 ctx`.
pub fn create_v3(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut params = affinity(dec)?;
    let flags: u32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut ctx: CUcontext = std::ptr::null_mut();
    let f = real_or_unsupported!(cuCtxCreate_v3, out);
    let ptr = if params.is_empty() {
        std::ptr::null_mut()
    } else {
        params.as_mut_ptr()
    };
    // SAFETY: `ptr` is NULL or points to `params.len()` structs; `ctx` is a live local.
    let r = unsafe { f(&mut ctx, ptr, params.len() as i32, flags, dev) };
    ResponseHeader::start(out, r.0).put(ctx as u64);
    Ok(())
}

/// `cuCtxCreate_v4`: `u8 has_params, [u32 n, n × CUexecAffinityParam], u32 flags, i32 dev` →
/// result, `u64 ctx`. The guest refuses CIG parameters (shared graphics contexts) itself.
pub fn create_v4(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let has_params = dec.get_flag("ctx params")?;
    let mut affinity = if has_params {
        affinity(dec)?
    } else {
        Vec::new()
    };
    let flags: u32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut params = CUctxCreateParams {
        execAffinityParams: if affinity.is_empty() {
            std::ptr::null_mut()
        } else {
            affinity.as_mut_ptr()
        },
        numExecAffinityParams: affinity.len() as i32,
        cigParams: std::ptr::null_mut(),
    };
    let mut ctx: CUcontext = std::ptr::null_mut();
    let f = real_or_unsupported!(cuCtxCreate_v4, out);
    let params_ptr: *mut CUctxCreateParams = if has_params {
        &mut params
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: every pointer is NULL or to a live local of the right type.
    let r = unsafe { f(&mut ctx, params_ptr, flags, dev) };
    ResponseHeader::start(out, r.0).put(ctx as u64);
    Ok(())
}
