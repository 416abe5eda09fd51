//! `6e163fbe-b958-444d-835c-e182aff1991e`: module tools (99 words; size word 792). cuFFT asks for
//! it when it loads its kernels and fails with `CUFFT_INTERNAL_ERROR` without it (CuPy's
//! `cupy.fft.fft` on the H100, driver 580.159.04).
//!
//! Read off the real driver with the spy (`tests/stacks/spy/`, `cupy.fft.fft` of 4096 complex64
//! values, `bench/results/2026-12-06-stacks.md`): cuFFT makes exactly one call into the table,
//! slot 7, with two driver objects, a callback whose whole body is `mov [rdi], rsi; ret` (it
//! stores its second argument at its first), and a pointer to a stack word; after the call that
//! word holds a heap pointer, and the slot returns 1. So slot 7 visits a module's functions:
//! `visit(user, function)` for each one, returning how many it visited; the word cuFFT gets back
//! is the module's (only) function, which it then launches. The object after the first argument
//! points back at the first (its word 3), as a module points at its context.
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 792 |
//! | 7 | `(void *a, void *b, void (*visit)(void *user, CUfunction), void *user) -> u32` | the functions of whichever of `b`, `a` is one of the client's modules (the host's gate decides: `cuModuleGetFunctionCount`, `cuModuleEnumerateFunctions`), each passed to `visit`; returns how many (0 when neither is a module, logged once) |
//! | others | unknown | [`unknown_slot!`](super::unknown_slot) |

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use cuda_headers::{CUfunction, CUmodule, CuResult};

use super::Known;
use crate::log::{log, Level};

/// The table: built on first use.
pub fn table() -> *const c_void {
    super::sparse_table!("tools-module", 99, fillers [
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
        33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
        62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90
        91 92 93 94 95 96 97 98
    ], {
        7 => each_function as *const c_void,
    })
}

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("6e163fbeb958444d835ce182aff1991e"),
    name: "tools-module",
    table,
};

/// What slot 7 calls for each function.
type Visit = unsafe extern "C" fn(user: *mut c_void, function: CUfunction);

/// Slot 7.
extern "system" fn each_function(
    a: *mut c_void,
    b: *mut c_void,
    visit: Option<Visit>,
    user: *mut c_void,
) -> u32 {
    let visited = catch_unwind(AssertUnwindSafe(|| {
        let functions = functions_of(b).or_else(|_| functions_of(a));
        let visited = match (&functions, visit) {
            (Ok(functions), Some(visit)) => {
                for &f in functions {
                    // SAFETY: the caller's callback with the caller's own `user`, as the
                    // driver calls it.
                    unsafe { visit(user, f) };
                }
                functions.len() as u32
            }
            (Ok(_), None) => 0,
            (Err(e), _) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                // No ordering needed: the flag only deduplicates a log line.
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    log!(
                        Level::Warn,
                        "export table tools-module slot 7: neither {a:p} nor {b:p} is a module of this client ({e}); no functions visited"
                    );
                }
                0
            }
        };
        crate::trace::event(format_args!(
            "tools-module[7](a={a:p}, b={b:p}, visit={:p}, user={user:p}) -> {visited}",
            visit.map_or(std::ptr::null(), |v| v as *const c_void)
        ));
        visited
    }));
    visited.unwrap_or(0)
}

/// The functions of `module`, if it is one of the client's modules.
fn functions_of(module: *mut c_void) -> CuResult<Vec<CUfunction>> {
    let module: CUmodule = module.cast();
    let mut count: u32 = 0;
    // SAFETY: `count` is a live local; the host's gate checks `module`.
    unsafe { crate::forward::generated::cuModuleGetFunctionCount(&mut count, module) }?;
    let mut functions: Vec<CUfunction> = vec![std::ptr::null_mut(); count as usize];
    // SAFETY: `functions` holds `count` entries.
    unsafe {
        crate::handlers::library::cuModuleEnumerateFunctions(functions.as_mut_ptr(), count, module)
    }?;
    Ok(functions)
}
