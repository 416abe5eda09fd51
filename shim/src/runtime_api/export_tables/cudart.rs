//! `6bd5fb6c-5bf4-e74a-8987-d93912fd9df9`: the cudart interface (13 words; the real driver's
//! size word is 104).
//!
//! | slot | signature (public reverse engineering) | what the shim does |
//! |---|---|---|
//! | 0 | size word | 104 |
//! | 1 | `(CUmodule *out, const fatbin_wrapper *w)` | loads the wrapper's fatbin through `cuModuleLoadFatBinary` (shipped to the host) |
//! | 2 | `(CUcontext *out, CUdevice dev)` | forwarded `cuDevicePrimaryCtxRetain` |
//! | 6 | `(CUmodule *out, const fatbin_wrapper *w, void *a, void *b, u32 c)` | as 1 when `a` and `b` are NULL; otherwise `CUDA_ERROR_NOT_SUPPORTED` with one log line (their meaning is unknown) |
//! | 7 | `(usize)` | no-op, `CUDA_SUCCESS` (meaning unknown; ZLUDA does the same) |
//! | 8 | `(const fatbin_header *f, CUmodule *out, void *a, void *b, u32 c)` | as 6, from a bare fatbin |
//! | 12 | `()` loads the compilers | no-op, `CUDA_SUCCESS`: the host's driver has its own |
//! | 3–5, 9–11 | unknown | [`unknown_slot!`](super::unknown_slot) |

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use cuda_headers::{CUcontext, CUdevice, CUmodule, CUresult, CuError, CuResult};

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};
use crate::log::{log, Level};

/// The table.
pub static TABLE: ExportTable<13> = ExportTable([
    ExportTable::<13>::size_word(),
    module_from_wrapper as *const c_void,
    primary_context_retain as *const c_void,
    unknown_slot!("cudart", 3),
    unknown_slot!("cudart", 4),
    unknown_slot!("cudart", 5),
    module_from_wrapper_ex as *const c_void,
    no_op_7 as *const c_void,
    module_from_fatbin_ex as *const c_void,
    unknown_slot!("cudart", 9),
    unknown_slot!("cudart", 10),
    unknown_slot!("cudart", 11),
    load_compilers as *const c_void,
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("6bd5fb6c5bf4e74a8987d93912fd9df9"),
    name: "cudart-interface",
    table: || TABLE.address(),
};

fn load(module: *mut CUmodule, image: *const c_void) -> CuResult {
    if module.is_null() || image.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: cudart passes a live wrapper or fatbin and a writable module slot.
    unsafe { crate::handlers::module::cuModuleLoadFatBinary(module, image) }
}

fn refuse_extra(slot_name: &str, a: *mut c_void, b: *mut c_void) -> CuResult {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if a.is_null() && b.is_null() {
        return Ok(());
    }
    // No ordering needed: the flag only deduplicates a log line.
    if !LOGGED.swap(true, Ordering::Relaxed) {
        log!(
            Level::Warn,
            "cudart interface {slot_name} called with non-NULL extra arguments ({a:p}, {b:p}); \
             their meaning is unknown (CUDA_ERROR_NOT_SUPPORTED)"
        );
    }
    Err(CuError::NOT_SUPPORTED)
}

/// Slot 1: module from a fatbin wrapper.
extern "system" fn module_from_wrapper(module: *mut CUmodule, wrapper: *const c_void) -> CUresult {
    slot(
        "cudart[1] module_from_wrapper",
        |out| {
            trace_arg(out, "module", &module);
            trace_arg(out, "wrapper", &wrapper);
        },
        || load(module, wrapper),
    )
}

/// Slot 2: the device's primary context, retained.
extern "system" fn primary_context_retain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    slot(
        "cudart[2] primary_context_retain",
        |out| {
            trace_arg(out, "pctx", &pctx);
            trace_arg(out, "dev", &dev);
        },
        || {
            if pctx.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: `pctx` is valid for one write.
            let result = unsafe { crate::forward::generated::cuDevicePrimaryCtxRetain(pctx, dev) };
            crate::local_cache::context_state_changed();
            result
        },
    )
}

/// Slot 6: module from a fatbin wrapper, with extra arguments.
extern "system" fn module_from_wrapper_ex(
    module: *mut CUmodule,
    wrapper: *const c_void,
    a: *mut c_void,
    b: *mut c_void,
    c: u32,
) -> CUresult {
    slot(
        "cudart[6] module_from_wrapper_ex",
        |out| {
            trace_arg(out, "module", &module);
            trace_arg(out, "wrapper", &wrapper);
            trace_arg(out, "a", &a);
            trace_arg(out, "b", &b);
            trace_arg(out, "c", &c);
        },
        || {
            refuse_extra("slot 6", a, b)?;
            load(module, wrapper)
        },
    )
}

/// Slot 7: unknown, harmless as a no-op.
extern "system" fn no_op_7(arg: usize) -> CUresult {
    slot(
        "cudart[7] no_op",
        |out| trace_arg(out, "arg", &arg),
        || Ok(()),
    )
}

/// Slot 8: module from a bare fatbin, with extra arguments.
extern "system" fn module_from_fatbin_ex(
    fatbin: *const c_void,
    module: *mut CUmodule,
    a: *mut c_void,
    b: *mut c_void,
    c: u32,
) -> CUresult {
    slot(
        "cudart[8] module_from_fatbin_ex",
        |out| {
            trace_arg(out, "fatbin", &fatbin);
            trace_arg(out, "module", &module);
            trace_arg(out, "a", &a);
            trace_arg(out, "b", &b);
            trace_arg(out, "c", &c);
        },
        || {
            refuse_extra("slot 8", a, b)?;
            load(module, fatbin)
        },
    )
}

/// Slot 12: load the compilers; the host's driver has its own, so nothing to do.
extern "system" fn load_compilers() -> CUresult {
    slot("cudart[12] load_compilers", |_| {}, || Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_module_pointers_are_invalid_values() {
        assert_eq!(
            module_from_wrapper(std::ptr::null_mut(), std::ptr::null()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        let mut m: CUmodule = std::ptr::null_mut();
        let mut x = 0u8;
        assert_eq!(
            module_from_wrapper_ex(
                &mut m,
                std::ptr::null(),
                (&mut x as *mut u8).cast(),
                std::ptr::null_mut(),
                0
            ),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert_eq!(load_compilers(), CUresult::CUDA_SUCCESS);
        assert_eq!(no_op_7(5), CUresult::CUDA_SUCCESS);
        assert_eq!(
            primary_context_retain(std::ptr::null_mut(), 0),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}
