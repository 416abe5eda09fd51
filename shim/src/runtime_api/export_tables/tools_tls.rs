//! `42d85a81-23f6-cb47-8298-f6e78a3aecdc`: tools TLS (size word 24: two functions).
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 24 |
//! | 1 | unknown | [`no_op_slot!`](super::no_op_slot): success, no effect |
//! | 2 | `(void **context) -> CUresult` | the calling thread's current context, or NULL and `CUDA_ERROR_INVALID_CONTEXT` |
//!
//! cuBLAS calls slot 2 when a handle is created and fails with `CUBLAS_STATUS_NOT_SUPPORTED`
//! on an error (seen on the H200, driver 580.159.04); the signature follows public
//! reverse-engineering of the table.

use std::ffi::c_void;

use cuda_headers::{CUresult, CuError};

use super::{no_op_slot, slot, trace_arg, ExportTable, Known};

/// The table.
pub static TABLE: ExportTable<3> = ExportTable([
    ExportTable::<3>::size_word(),
    no_op_slot!("tools-tls", 1),
    current_context as *const c_void,
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("42d85a8123f6cb478298f6e78a3aecdc"),
    name: "tools-tls",
    table: || TABLE.address(),
};

/// Slot 2.
extern "system" fn current_context(out: *mut *mut c_void) -> CUresult {
    slot(
        "tools-tls[2]",
        |text| trace_arg(text, "context", &out),
        || {
            if out.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let ctx = crate::handlers::cached::current_context()?;
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { out.write(ctx.cast()) };
            if ctx.is_null() {
                return Err(CuError::INVALID_CONTEXT);
            }
            Ok(())
        },
    )
}
