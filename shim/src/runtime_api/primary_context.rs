//! Running context-local-storage destructors where the real driver does: before a primary
//! context is reset and before a context is destroyed. Then the call is forwarded.
//!
//! A reset names a device, but storage is keyed by context handle. When the storage is empty
//! nothing is asked. Otherwise `cuDevicePrimaryCtxGetState` says whether the primary context is
//! active; only then is its handle read with `cuDevicePrimaryCtxRetain` immediately followed by
//! `cuDevicePrimaryCtxRelease_v2`, which leaves the reference count as it was (an inactive
//! primary context is never created by this, and has no live handle to clean up).

use cuda_headers::{CUcontext, CUdevice, CuResult};

use super::context_storage;
use crate::forward::generated;

/// The handle of `dev`'s primary context if it is active; `None` without asking when the storage
/// is empty.
fn active_primary_context(dev: CUdevice) -> CuResult<Option<u64>> {
    if context_storage::is_empty() {
        return Ok(None);
    }
    let (mut flags, mut active) = (0u32, 0i32);
    // SAFETY: both out-pointers are valid for one write.
    unsafe { generated::cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active) }?;
    if active == 0 {
        return Ok(None);
    }
    let mut ctx: CUcontext = std::ptr::null_mut();
    // SAFETY: `ctx` is valid for one write.
    unsafe { generated::cuDevicePrimaryCtxRetain(&mut ctx, dev) }?;
    // SAFETY: releases exactly the reference taken above.
    unsafe { generated::cuDevicePrimaryCtxRelease_v2(dev) }?;
    Ok(Some(ctx as u64))
}

fn before_reset(dev: CUdevice) -> CuResult {
    if let Some(ctx) = active_primary_context(dev)? {
        context_storage::destroy_context(ctx);
    }
    Ok(())
}

fn before_destroy(ctx: CUcontext) {
    if context_storage::has_entries(ctx as u64) {
        context_storage::destroy_context(ctx as u64);
    }
}

/// `cuDevicePrimaryCtxReset_v2`: storage destructors of the primary context, then the reset.
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CuResult {
    before_reset(dev)?;
    // SAFETY: value arguments only.
    unsafe { generated::cuDevicePrimaryCtxReset_v2(dev) }
}

/// `cuDevicePrimaryCtxReset`: as [`cuDevicePrimaryCtxReset_v2`].
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuDevicePrimaryCtxReset(dev: CUdevice) -> CuResult {
    before_reset(dev)?;
    // SAFETY: value arguments only.
    unsafe { generated::cuDevicePrimaryCtxReset(dev) }
}

/// `cuCtxDestroy_v2`: storage destructors of `ctx`, then the destruction.
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuCtxDestroy_v2(ctx: CUcontext) -> CuResult {
    before_destroy(ctx);
    // SAFETY: value arguments only.
    unsafe { generated::cuCtxDestroy_v2(ctx) }
}

/// `cuCtxDestroy`: as [`cuCtxDestroy_v2`].
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuCtxDestroy(ctx: CUcontext) -> CuResult {
    before_destroy(ctx);
    // SAFETY: value arguments only.
    unsafe { generated::cuCtxDestroy(ctx) }
}
