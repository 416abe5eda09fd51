//! Queries answered from [`crate::local_cache`] after their first answer: the current context and
//! its device, primary-context state, device, function and kernel attributes, a kernel's function
//! in a context. A miss forwards the call unchanged (generated marshalling, the same wire format)
//! and keeps a successful answer; errors are never kept. Attribute sets to the value already
//! held are answered here; other sets are forwarded and make kept attributes stale.
#![allow(non_snake_case)]

use cuda_headers::*;

use crate::forward::generated;
use crate::local_cache::{self as cache, Epochs, Handle};

/// Cached answers must not outlive the host: a lost host fails every call, as before.
fn host_alive() -> CuResult {
    if crate::channel::host_lost() {
        Err(crate::channel::HOST_GONE)
    } else {
        Ok(())
    }
}

/// Writes `value` through a caller's out-pointer, which each export checked for NULL before it
/// asked anything.
///
/// # Safety
/// `p` is non-NULL and valid for one write.
unsafe fn put<T>(p: *mut T, value: T) -> CuResult {
    // SAFETY: per this function's contract.
    unsafe { p.write(value) };
    Ok(())
}

/// The current context: kept, else asked (also what the export tables' "current context"
/// slots answer with).
///
/// # Errors
/// The host's result on a miss.
pub(crate) fn current_context() -> CuResult<CUcontext> {
    host_alive()?;
    if let Some(ctx) = cache::current() {
        return Ok(ctx as CUcontext);
    }
    let read = Epochs::now();
    let mut ctx: CUcontext = std::ptr::null_mut();
    // SAFETY: `ctx` is valid for one write.
    unsafe { generated::cuCtxGetCurrent(&mut ctx) }?;
    cache::keep_current(read, ctx as u64);
    Ok(ctx)
}

/// `cuCtxGetCurrent`, kept per thread.
///
/// # Safety
/// `pctx` is NULL or valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL; the host's result on a miss.
pub unsafe fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CuResult {
    host_alive()?;
    if pctx.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = current_context()?;
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe { put(pctx, ctx) }
}

/// The device of `ctx` (NULL: the current context): kept, else asked with `ask`.
fn device_of(ctx: CUcontext, ask: impl FnOnce(&mut CUdevice) -> CuResult) -> CuResult<CUdevice> {
    let ctx = if ctx.is_null() {
        current_context()?
    } else {
        ctx
    };
    if !ctx.is_null() {
        if let Some(dev) = cache::ctx_device(ctx as u64) {
            return Ok(dev);
        }
    }
    let read = Epochs::now();
    let mut dev: CUdevice = 0;
    ask(&mut dev)?;
    if !ctx.is_null() {
        cache::keep_ctx_device(read, ctx as u64, dev);
    }
    Ok(dev)
}

/// `cuCtxGetDevice`: the current context's device, kept per context.
///
/// # Safety
/// `device` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuCtxGetDevice(device: *mut CUdevice) -> CuResult {
    host_alive()?;
    if device.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: `d` is valid for one write.
    let dev = device_of(std::ptr::null_mut(), |d| unsafe {
        generated::cuCtxGetDevice(d)
    })?;
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe { put(device, dev) }
}

/// `cuCtxGetDevice_v2`: the device of `ctx` (NULL: the current context), kept per context.
///
/// # Safety
/// `device` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuCtxGetDevice_v2(device: *mut CUdevice, ctx: CUcontext) -> CuResult {
    host_alive()?;
    if device.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: `d` is valid for one write; `ctx` is the caller's handle, checked by the host.
    let dev = device_of(ctx, |d| unsafe { generated::cuCtxGetDevice_v2(d, ctx) })?;
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe { put(device, dev) }
}

/// `cuCtxGetLimit`, kept per limit of the current context until a context-state call (which
/// `cuCtxSetLimit` and every context switch are). `CU_LIMIT_STACK_SIZE` is always asked: the
/// driver grows the stack itself when a launch needs more.
///
/// # Safety
/// `pvalue` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuCtxGetLimit(pvalue: *mut usize, limit: CUlimit) -> CuResult {
    host_alive()?;
    if pvalue.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let keepable = limit != CUlimit::CU_LIMIT_STACK_SIZE;
    let value = match cache::limit(limit.0 as i32).filter(|_| keepable) {
        Some(value) => value,
        None => {
            let read = Epochs::now();
            let mut value = 0usize;
            // SAFETY: `value` is valid for one write.
            unsafe { generated::cuCtxGetLimit(&mut value, limit) }?;
            if keepable {
                cache::keep_limit(read, limit.0 as i32, value);
            }
            value
        }
    };
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe { pvalue.write(value) };
    Ok(())
}

/// `cuDevicePrimaryCtxGetState`, kept per device until a context-state call.
///
/// # Safety
/// `flags` and `active` are NULL or valid for one write each.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuDevicePrimaryCtxGetState(
    dev: CUdevice,
    flags: *mut u32,
    active: *mut i32,
) -> CuResult {
    host_alive()?;
    if flags.is_null() || active.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (f, a) = match cache::primary_state(dev) {
        Some(state) => state,
        None => {
            let read = Epochs::now();
            let (mut f, mut a) = (0u32, 0i32);
            // SAFETY: both out-pointers are valid for one write.
            unsafe { generated::cuDevicePrimaryCtxGetState(dev, &mut f, &mut a) }?;
            cache::keep_primary_state(read, dev, (f, a));
            (f, a)
        }
    };
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe {
        flags.write(f);
        active.write(a);
    }
    Ok(())
}

/// An `int` query: `kept` when known, else asked with `ask` and the answer handed to `keep`
/// with the epochs read before asking; written through `pi`.
fn int_answer(
    pi: *mut i32,
    kept: impl FnOnce() -> Option<i32>,
    ask: impl FnOnce(&mut i32) -> CuResult,
    keep: impl FnOnce(Epochs, i32),
) -> CuResult {
    host_alive()?;
    if pi.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let value = match kept() {
        Some(v) => v,
        None => {
            let read = Epochs::now();
            let mut v = 0;
            ask(&mut v)?;
            keep(read, v);
            v
        }
    };
    // SAFETY: checked non-NULL; the caller's out-pointer is valid for one write.
    unsafe { pi.write(value) };
    Ok(())
}

/// `cuDeviceGetAttribute`: a device's attributes are fixed, so each is asked once per thread.
///
/// # Safety
/// `pi` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuDeviceGetAttribute(
    pi: *mut i32,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> CuResult {
    let key = attrib.0 as i32;
    int_answer(
        pi,
        || cache::device_attribute(key, dev),
        // SAFETY: `v` is valid for one write.
        |v| unsafe { generated::cuDeviceGetAttribute(v, attrib, dev) },
        |_, v| cache::keep_device_attribute(key, dev, v),
    )
}

/// A function or kernel attribute: kept, else asked with `ask`.
fn get_attribute(
    pi: *mut i32,
    handle: Handle,
    attrib: CUfunction_attribute,
    ask: impl FnOnce(&mut i32) -> CuResult,
) -> CuResult {
    let key = attrib.0 as i32;
    int_answer(
        pi,
        || cache::attribute(handle, key),
        ask,
        |read, v| cache::keep_attribute(read, handle, key, v),
    )
}

/// A set of a function or kernel attribute: nothing to do when the kept value (or this thread's
/// last posted set) is already `value`; otherwise sent with `send` (posted when posting is on),
/// then kept attributes are stale (a set on a kernel changes its functions too). A synchronous
/// set's value is kept as the answer; a posted one's only lets an identical set be skipped, so
/// a get after a posted set asks the host, which reports the set's failure there.
fn set_attribute(
    handle: Handle,
    attrib: CUfunction_attribute,
    value: i32,
    send: impl FnOnce() -> CuResult,
) -> CuResult {
    host_alive()?;
    let key = attrib.0 as i32;
    if cache::attribute(handle, key) == Some(value) || cache::posted_set(handle, key) == Some(value)
    {
        return Ok(());
    }
    // Posted when posting is on (the call table's `Posted::WhenAllowed`): a failure answers a later call.
    crate::posted::allowing(send)?;
    let posted = crate::posted::posted_so_far();
    cache::attributes_changed();
    if posted {
        cache::keep_posted_set(Epochs::now(), handle, key, value);
    } else {
        cache::keep_attribute(Epochs::now(), handle, key, value);
    }
    Ok(())
}

/// `cuFuncGetAttribute`, kept per function.
///
/// # Safety
/// `pi` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuFuncGetAttribute(
    pi: *mut i32,
    attrib: CUfunction_attribute,
    hfunc: CUfunction,
) -> CuResult {
    get_attribute(pi, Handle::Function(hfunc as u64), attrib, |v| {
        // SAFETY: `v` is valid for one write; the handle is checked by the host.
        unsafe { generated::cuFuncGetAttribute(v, attrib, hfunc) }
    })
}

/// `cuKernelGetAttribute`, kept per kernel and device.
///
/// # Safety
/// `pi` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuKernelGetAttribute(
    pi: *mut i32,
    attrib: CUfunction_attribute,
    kernel: CUkernel,
    dev: CUdevice,
) -> CuResult {
    get_attribute(pi, Handle::Kernel(kernel as u64, dev), attrib, |v| {
        // SAFETY: `v` is valid for one write; the handle is checked by the host.
        unsafe { generated::cuKernelGetAttribute(v, attrib, kernel, dev) }
    })
}

/// `cuFuncSetAttribute`: a set to the kept value is answered here, others are posted.
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result when forwarded.
pub unsafe fn cuFuncSetAttribute(
    hfunc: CUfunction,
    attrib: CUfunction_attribute,
    value: i32,
) -> CuResult {
    set_attribute(Handle::Function(hfunc as u64), attrib, value, || {
        // SAFETY: value arguments only.
        unsafe { generated::cuFuncSetAttribute(hfunc, attrib, value) }
    })
}

/// `cuKernelSetAttribute`: a set to the kept value is answered here, others are posted.
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result when forwarded.
pub unsafe fn cuKernelSetAttribute(
    attrib: CUfunction_attribute,
    val: i32,
    kernel: CUkernel,
    dev: CUdevice,
) -> CuResult {
    set_attribute(Handle::Kernel(kernel as u64, dev), attrib, val, || {
        // SAFETY: value arguments only.
        unsafe { generated::cuKernelSetAttribute(attrib, val, kernel, dev) }
    })
}

/// `cuFuncSetCacheConfig`: forwarded; kept attributes are stale afterwards (the carveout).
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuFuncSetCacheConfig(hfunc: CUfunction, config: CUfunc_cache) -> CuResult {
    // SAFETY: value arguments only.
    let result = unsafe { generated::cuFuncSetCacheConfig(hfunc, config) };
    cache::attributes_changed();
    result
}

/// `cuKernelSetCacheConfig`: forwarded; kept attributes are stale afterwards.
///
/// # Safety
/// Always safe: only values are passed.
///
/// # Errors
/// The host's result.
pub unsafe fn cuKernelSetCacheConfig(
    kernel: CUkernel,
    config: CUfunc_cache,
    dev: CUdevice,
) -> CuResult {
    // SAFETY: value arguments only.
    let result = unsafe { generated::cuKernelSetCacheConfig(kernel, config, dev) };
    cache::attributes_changed();
    result
}

/// `cuKernelGetFunction`: the kernel's function in the current context, kept per (kernel,
/// context).
///
/// # Safety
/// `pFunc` is NULL or valid for one write.
///
/// # Errors
/// As the driver's, from the host on a miss.
pub unsafe fn cuKernelGetFunction(pFunc: *mut CUfunction, kernel: CUkernel) -> CuResult {
    host_alive()?;
    if pFunc.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = current_context()? as u64;
    let function = match cache::kernel_function(kernel as u64, ctx).filter(|_| ctx != 0) {
        Some(f) => f as CUfunction,
        None => {
            let read = Epochs::now();
            let mut f: CUfunction = std::ptr::null_mut();
            // SAFETY: `f` is valid for one write; the handle is checked by the host.
            unsafe { generated::cuKernelGetFunction(&mut f, kernel) }?;
            if ctx != 0 {
                cache::keep_kernel_function(read, kernel as u64, ctx, f as u64);
            }
            f
        }
    };
    // SAFETY: checked non-NULL; valid per the contract.
    unsafe { put(pFunc, function) }
}
