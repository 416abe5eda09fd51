//! `263e8860-7cd2-6143-92f6-bbd5006dfa7e`: context checks (15 words; size word 120).
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 120 |
//! | 2 | `(CUcontext ctx, u32 *result, const void **detail)` | `*result = 0`, `CUDA_SUCCESS`; `detail` is left alone (public work reports it is never observably set) |
//! | 3 | `() -> u32` | 0 |
//! | 1, 4–14 | unknown | [`unknown_slot!`](super::unknown_slot) |

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cuda_headers::{CUcontext, CUresult, CuError};

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};

/// The table.
pub static TABLE: ExportTable<15> = ExportTable([
    ExportTable::<15>::size_word(),
    unknown_slot!("context-checks", 1),
    context_check as *const c_void,
    check_3 as *const c_void,
    unknown_slot!("context-checks", 4),
    unknown_slot!("context-checks", 5),
    unknown_slot!("context-checks", 6),
    unknown_slot!("context-checks", 7),
    unknown_slot!("context-checks", 8),
    unknown_slot!("context-checks", 9),
    unknown_slot!("context-checks", 10),
    unknown_slot!("context-checks", 11),
    unknown_slot!("context-checks", 12),
    unknown_slot!("context-checks", 13),
    unknown_slot!("context-checks", 14),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("263e88607cd2614392f6bbd5006dfa7e"),
    name: "context-checks",
    table: || TABLE.address(),
};

/// Slot 2.
extern "system" fn context_check(
    ctx: CUcontext,
    result: *mut u32,
    detail: *mut *const c_void,
) -> CUresult {
    slot(
        "context-checks[2]",
        |out| {
            trace_arg(out, "ctx", &ctx);
            trace_arg(out, "result", &result);
            trace_arg(out, "detail", &detail);
        },
        || {
            if result.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: non-NULL, valid for one write (runtime contract).
            unsafe { result.write(0) };
            Ok(())
        },
    )
}

/// Slot 3.
extern "system" fn check_3() -> u32 {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        crate::trace::event(format_args!("context-checks[3]() -> 0"));
    }));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_answer_zero() {
        let mut r = 7u32;
        let mut d: *const c_void = 0x10 as *const c_void;
        assert_eq!(
            context_check(std::ptr::null_mut(), &mut r, &mut d),
            CUresult::CUDA_SUCCESS
        );
        assert_eq!(r, 0);
        assert_eq!(d as usize, 0x10, "detail untouched");
        assert_eq!(check_3(), 0);
    }
}
