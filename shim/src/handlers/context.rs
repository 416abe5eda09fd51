//! Context creation with parameter arrays. Host halves: `host/src/dispatch/handlers/context.rs`.
#![allow(non_snake_case)]

use cuda_headers::*;
use protocol::Encoder;

use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// # Safety
/// `params` holds `count` entries when non-NULL.
unsafe fn put_affinity(
    enc: &mut Encoder<'_>,
    params: *const CUexecAffinityParam,
    count: i32,
) -> CuResult {
    let count = if params.is_null() {
        0
    } else {
        count.max(0) as usize
    };
    enc.put(count as u32);
    for i in 0..count {
        // SAFETY: per the contract; the struct is plain data.
        unsafe { enc.put_raw(&*params.add(i)) };
    }
    Ok(())
}

fn write_ctx(pctx: *mut CUcontext, dec: &mut protocol::Decoder<'_>) -> CuResult {
    let ctx = dec.get::<u64>().map_err(bad_response)? as CUcontext;
    if !pctx.is_null() {
        // SAFETY: non-NULL out-pointer, valid per the driver API contract.
        unsafe { pctx.write(ctx) };
    }
    Ok(())
}

/// Creates a context with execution-affinity parameters.
///
/// # Safety
/// `paramsArray` holds `numParams` entries; `pctx` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuCtxCreate_v3(
    pctx: *mut CUcontext,
    paramsArray: *mut CUexecAffinityParam,
    numParams: i32,
    flags: u32,
    dev: CUdevice,
) -> CuResult {
    let mut request = Vec::new();
    // SAFETY: per the contract.
    unsafe { put_affinity(&mut Encoder::new(&mut request), paramsArray, numParams) }?;
    call_with(
        shim_macros::cuda_call_id!(cuCtxCreate_v3),
        |enc| {
            enc.put_raw_bytes(&request);
            enc.put(flags);
            enc.put(dev);
        },
        |dec| write_ctx(pctx, dec),
    )
}

/// Creates a context (CUDA 13's `cuCtxCreate`). CIG (shared graphics) parameters are not
/// supported across the VM boundary.
///
/// # Safety
/// `ctxCreateParams` is NULL or valid; `pctx` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` for CIG parameters; the host's result.
pub unsafe fn cuCtxCreate_v4(
    pctx: *mut CUcontext,
    ctxCreateParams: *mut CUctxCreateParams,
    flags: u32,
    dev: CUdevice,
) -> CuResult {
    let mut request = Vec::new();
    {
        let mut enc = Encoder::new(&mut request);
        // SAFETY: per the contract.
        match unsafe { ctxCreateParams.as_ref() } {
            None => enc.put_flag(false),
            Some(p) => {
                if !p.cigParams.is_null() {
                    log!(
                        Level::Warn,
                        "cuCtxCreate with CIG parameters is not supported"
                    );
                    return Err(CuError::NOT_SUPPORTED);
                }
                enc.put_flag(true);
                // SAFETY: per the contract.
                unsafe { put_affinity(&mut enc, p.execAffinityParams, p.numExecAffinityParams) }?;
            }
        }
    }
    call_with(
        shim_macros::cuda_call_id!(cuCtxCreate_v4),
        |enc| {
            enc.put_raw_bytes(&request);
            enc.put(flags);
            enc.put(dev);
        },
        |dec| write_ctx(pctx, dec),
    )
}
