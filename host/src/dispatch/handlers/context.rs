//! Context creation with parameter structs that hold arrays.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
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

/// A hand-written host half.
type Handler =
    fn(&str, &Arc<ClientContext>, &mut Decoder<'_>, &mut Vec<u8>) -> Result<(), DecodeError>;

/// Runs a `cuCtxCreate*` half within the client's context quota (`dispatch/quota.rs`): refused
/// with `CUDA_ERROR_OUT_OF_MEMORY` when the client holds its quota; the context the response
/// names is counted until it is destroyed, and minted in the client's handle table.
fn counted(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
    create: Handler,
) -> Result<(), DecodeError> {
    let reservation = match client.context_quota.reserve() {
        Ok(r) => r,
        Err(refused) => {
            respond(out, refused);
            return Ok(());
        }
    };
    let outcome = create(name, client, dec, out);
    let mut back = Decoder::new(out);
    let made = ResponseHeader::read(&mut back)
        .ok()
        .filter(|h| h.result == 0)
        .map(|_| back.get::<u64>().unwrap_or(0));
    if let Some(ctx) = made.filter(|&c| c != 0) {
        client.handles.mint(Kind::Context, ctx, 0);
    }
    client.context_quota.settle(reservation, made);
    outcome
}

/// `cuCtxCreate_v3`: `u32 n, n × CUexecAffinityParam, u32 flags, i32 dev` → result, `u64 ctx`.
pub fn create_v3(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    counted(name, client, dec, out, create_v3_uncounted)
}

fn create_v3_uncounted(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut params = affinity(dec)?;
    let flags: u32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    if params.is_empty() {
        if let Some(ctx) = client.contexts.take(dev, flags) {
            ResponseHeader::start(out, 0).put(ctx as u64);
            return Ok(());
        }
    }
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
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    counted(name, client, dec, out, create_v4_uncounted)
}

fn create_v4_uncounted(
    _: &str,
    client: &Arc<ClientContext>,
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
    if affinity.is_empty() {
        if let Some(ctx) = client.contexts.take(dev, flags) {
            ResponseHeader::start(out, 0).put(ctx as u64);
            return Ok(());
        }
    }
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

/// `cuCtxCreate_v2`, overriding its generated host half with the same wire format
/// (`u8 present, [u64 ctx], u32 flags, i32 dev` → result, `[u64 ctx]`), to use the context pool.
pub fn create_v2(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    counted(name, client, dec, out, create_v2_uncounted)
}

fn create_v2_uncounted(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: a handle is plain data.
    let pctx: Option<u64> = unsafe { dec.get_opt_raw()? };
    let flags: u32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut ctx: CUcontext = std::ptr::null_mut();
    let result = match client.contexts.take(dev, flags) {
        Some(pooled) => {
            ctx = pooled;
            CUresult::CUDA_SUCCESS
        }
        None => {
            let f = real_or_unsupported!(cuCtxCreate_v2, out);
            let ptr: *mut CUcontext = if pctx.is_some() {
                &mut ctx
            } else {
                std::ptr::null_mut()
            };
            // SAFETY: NULL or a live local.
            unsafe { f(ptr, flags, dev) }
        }
    };
    let mut enc = ResponseHeader::start(out, result.0);
    if pctx.is_some() {
        enc.put(ctx as u64);
    }
    Ok(())
}

/// `cuCtxDestroy`/`cuCtxDestroy_v2`, overriding the generated host half with the same wire
/// format (`u64 ctx` → result): the calling thread's current context is popped now and
/// destroyed behind (see `dispatch/contexts.rs`). The context must be one of the client's
/// (`CUDA_ERROR_INVALID_CONTEXT` otherwise); it is forgotten with what was made in it.
pub fn destroy(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let value: u64 = dec.get()?;
    dec.finish()?;
    let ctx = admit!(client.handles.context(value), out);
    let r = if !ctx.is_null() && client.contexts.destroy_behind(ctx) {
        CUresult::CUDA_SUCCESS
    } else {
        // SAFETY: NULL (refused by the driver) or a context the gate admitted.
        unsafe {
            if name == "cuCtxDestroy" {
                real_or_unsupported!(cuCtxDestroy, out)(ctx)
            } else {
                real_or_unsupported!(cuCtxDestroy_v2, out)(ctx)
            }
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        // What was made in it died with it.
        client.handles.retire_context(value);
        client.handles.retire(Kind::Context, value);
        client.context_quota.destroyed(value);
    }
    respond(out, r);
    Ok(())
}
