//! `21318c60-9714-3248-8ca6-41ff7324c8f2`: the context and stream identities cuBLAS asks for
//! (93 words; size word 744). Without this table `cublasCreate` fails with
//! `CUBLAS_STATUS_NOT_SUPPORTED` (seen on the H200, driver 580.159.04). The three slots below are
//! the ones public reverse-engineering of the table documents; the guest-side handles are the
//! host's own, so the identities are the handles themselves.
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 744 |
//! | 4 | `(CUcontext ctx, u64 *key) -> CUresult` | `*key = ctx` (the current context when NULL) |
//! | 39 | `(CUcontext ctx, const void *private_stream, u64 *identity) -> CUresult` | `*identity = private_stream` |
//! | 51 | `(CUcontext ctx, CUstream stream, void **private_stream, int per_thread) -> CUresult` | `*private_stream = stream` |
//! | others | unknown | [`unknown_slot!`](super::unknown_slot) |

use std::ffi::c_void;

use cuda_headers::{CUcontext, CUresult, CUstream, CuError};

use super::{slot, trace_arg, Known};

/// The table: built on first use.
pub fn table() -> *const c_void {
    super::sparse_table!("blas-streams", 93, fillers [
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
        33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
        62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90
        91 92
    ], {
        4 => context_key as *const c_void,
        39 => stream_identity as *const c_void,
        51 => stream_from_public as *const c_void,
    })
}

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("21318c60971432488ca641ff7324c8f2"),
    name: "blas-streams",
    table,
};

/// Slot 4.
extern "system" fn context_key(ctx: CUcontext, key: *mut u64) -> CUresult {
    slot(
        "blas-streams[4]",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "key", &key);
        },
        || {
            if key.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let ctx = if ctx.is_null() {
                crate::handlers::cached::current_context()?
            } else {
                ctx
            };
            if ctx.is_null() {
                return Err(CuError::INVALID_CONTEXT);
            }
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { key.write(ctx as u64) };
            Ok(())
        },
    )
}

/// Slot 39.
extern "system" fn stream_identity(
    ctx: CUcontext,
    private_stream: *const c_void,
    identity: *mut u64,
) -> CUresult {
    slot(
        "blas-streams[39]",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "private_stream", &private_stream);
        },
        || {
            if identity.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { identity.write(private_stream as u64) };
            Ok(())
        },
    )
}

/// Slot 51.
extern "system" fn stream_from_public(
    ctx: CUcontext,
    stream: CUstream,
    private_stream: *mut *mut c_void,
    per_thread: i32,
) -> CUresult {
    slot(
        "blas-streams[51]",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "stream", &stream);
            trace_arg(out, "per_thread", &per_thread);
        },
        || {
            if private_stream.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { private_stream.write(stream.cast()) };
            Ok(())
        },
    )
}
