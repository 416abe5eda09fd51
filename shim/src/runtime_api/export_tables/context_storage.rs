//! `c693336e-1121-df11-a8c3-68f355d89593`: context-local storage. No size word: slot 0 is a
//! function (the real driver's first word was a code address).
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | `(CUcontext ctx, void *key, void *value, dtor)` | stores (ctx, key) → value, dtor |
//! | 1 | `(CUcontext ctx, void *key)` | deletes (ctx, key) without running its dtor |
//! | 2 | `(void **value, CUcontext ctx, void *key)` | the value, or `CUDA_ERROR_INVALID_HANDLE` when absent |
//! | 3–7 | unknown | [`unknown_slot!`](super::unknown_slot) |
//!
//! A NULL `ctx` means the calling thread's current context (asked of the host). Destructors run
//! as `dtor(ctx, key, value)` on `cuDevicePrimaryCtxReset` of that primary context and on
//! `cuCtxDestroy` (see `runtime_api::primary_context`). The real table is longer; how long is not
//! known, so 8 slots are served.

use std::ffi::c_void;

use cuda_headers::{CUcontext, CUresult, CuError, CuResult};

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};
use crate::runtime_api::context_storage::{self as store, Destructor};

/// The table.
pub static TABLE: ExportTable<8> = ExportTable([
    put as *const c_void,
    delete as *const c_void,
    get as *const c_void,
    unknown_slot!("context-local-storage", 3),
    unknown_slot!("context-local-storage", 4),
    unknown_slot!("context-local-storage", 5),
    unknown_slot!("context-local-storage", 6),
    unknown_slot!("context-local-storage", 7),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("c693336e1121df11a8c368f355d89593"),
    name: "context-local-storage",
    table: || TABLE.address(),
};

/// `ctx`, or the current context when it is NULL.
fn context_or_current(ctx: CUcontext) -> CuResult<u64> {
    if !ctx.is_null() {
        return Ok(ctx as u64);
    }
    let current = crate::handlers::cached::current_context()?;
    if current.is_null() {
        return Err(CuError::INVALID_CONTEXT);
    }
    Ok(current as u64)
}

/// Slot 0.
extern "system" fn put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    destructor: Option<Destructor>,
) -> CUresult {
    slot(
        "context-local-storage[0] put",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "key", &key);
            trace_arg(out, "value", &value);
            trace_arg(out, "destructor", &destructor);
        },
        || {
            store::put(
                context_or_current(ctx)?,
                key as u64,
                value as usize,
                destructor,
            );
            Ok(())
        },
    )
}

/// Slot 1.
extern "system" fn delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    slot(
        "context-local-storage[1] delete",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "key", &key);
        },
        || {
            store::delete(context_or_current(ctx)?, key as u64);
            Ok(())
        },
    )
}

/// Slot 2.
extern "system" fn get(value: *mut *mut c_void, ctx: CUcontext, key: *mut c_void) -> CUresult {
    slot(
        "context-local-storage[2] get",
        |out| {
            trace_arg(out, "value", &value);
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "key", &key);
        },
        || {
            if value.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let found =
                store::get(context_or_current(ctx)?, key as u64).ok_or(CuError::INVALID_HANDLE)?;
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { value.write(found as *mut c_void) };
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DESTROYED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "system" fn destroyed(_: CUcontext, _: *mut c_void, value: *mut c_void) {
        // Ordering irrelevant: test bookkeeping.
        DESTROYED.store(value as usize, Ordering::Relaxed);
    }

    #[test]
    fn put_get_delete_through_the_slots() {
        let ctx = 0xc7c7_0000usize as CUcontext;
        let key = 0x4b_usize as *mut c_void;
        let mut value = std::ptr::null_mut();
        assert_eq!(
            get(&mut value, ctx, key),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(
            put(ctx, key, 0x1234usize as *mut c_void, Some(destroyed)),
            CUresult::CUDA_SUCCESS
        );
        assert_eq!(get(&mut value, ctx, key), CUresult::CUDA_SUCCESS);
        assert_eq!(value as usize, 0x1234);
        assert_eq!(delete(ctx, key), CUresult::CUDA_SUCCESS);
        assert_eq!(
            get(&mut value, ctx, key),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(
            DESTROYED.load(Ordering::Relaxed),
            0,
            "delete runs no destructor"
        );

        put(ctx, key, 0x5678usize as *mut c_void, Some(destroyed));
        assert_eq!(store::destroy_context(ctx as u64), 1);
        assert_eq!(DESTROYED.load(Ordering::Relaxed), 0x5678);
        assert_eq!(
            get(std::ptr::null_mut(), ctx, key),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}
