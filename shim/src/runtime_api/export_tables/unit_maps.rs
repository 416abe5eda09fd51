//! `1734dc26-800d-4745-8726-c0f1e7dd8bca` (17 words; size word 136): asked for by cuBLASLt before
//! its first bf16/fp16 matmul, which dereferences the table without checking the result, so
//! answering `CUDA_ERROR_NOT_FOUND` crashed PyTorch (H200, driver 580.159.04). Public
//! reverse-engineering material calls it the cluster-prototype table.
//!
//! What cuBLASLt does with it was observed on the H200 with the real driver and
//! `tests/stacks/spy/` (a logging copy of the table, `bench/results/2026-11-29-stacks.md`):
//! it calls slot 4 once, reads the two byte arrays it returns, and hands both to slot 13. No
//! other slot was called by PyTorch's matmuls, convolutions, transformer or graphs.
//!
//! | slot | signature (observed) | what the shim does |
//! |---|---|---|
//! | 0 | size word | 136 |
//! | 4 | `(u8 **first, u8 **second) -> CUresult`: two arrays allocated by the driver, one byte per execution unit of the current context's device (on the H200: `0 1 … 7 0 1 …` and `0 ×8, 1 ×8, …`) | runs the real slot on the host (`special::UNIT_MAPS`), copies both arrays into fresh guest `malloc` blocks |
//! | 13 | `(u8 *first, u8 *second) -> CUresult`: frees what slot 4 returned | frees the guest copies; a pointer slot 4 did not hand out gets `CUDA_ERROR_INVALID_VALUE` and one log line |
//! | others | unknown | [`unknown_slot!`](super::unknown_slot) |

use std::collections::BTreeSet;
use std::ffi::c_void;
use std::sync::Mutex;

use cuda_headers::{CUresult, CuError, CuResult};
use protocol::special;

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

const WORDS: usize = 17;

/// The table.
pub static TABLE: ExportTable<WORDS> = ExportTable([
    ExportTable::<WORDS>::size_word(),
    unknown_slot!("unit-maps", 1),
    unknown_slot!("unit-maps", 2),
    unknown_slot!("unit-maps", 3),
    unit_maps as *const c_void,
    unknown_slot!("unit-maps", 5),
    unknown_slot!("unit-maps", 6),
    unknown_slot!("unit-maps", 7),
    unknown_slot!("unit-maps", 8),
    unknown_slot!("unit-maps", 9),
    unknown_slot!("unit-maps", 10),
    unknown_slot!("unit-maps", 11),
    unknown_slot!("unit-maps", 12),
    free_unit_maps as *const c_void,
    unknown_slot!("unit-maps", 14),
    unknown_slot!("unit-maps", 15),
    unknown_slot!("unit-maps", 16),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("1734dc26800d47458726c0f1e7dd8bca"),
    name: "unit-maps",
    table: || TABLE.address(),
};

/// Guest blocks slot 4 handed out and slot 13 has not freed yet.
static HANDED_OUT: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn handed_out() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `malloc` copy of `bytes` (at least one byte, so it is never NULL for an empty map).
fn guest_copy(bytes: &[u8]) -> CuResult<*mut u8> {
    // SAFETY: plain allocation; the size is non-zero.
    let p = unsafe { libc::malloc(bytes.len().max(1)) }.cast::<u8>();
    if p.is_null() {
        return Err(CuError::OUT_OF_MEMORY);
    }
    // SAFETY: `p` holds at least `bytes.len()` bytes and does not overlap `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    handed_out().insert(p as usize);
    Ok(p)
}

/// Slot 4.
extern "system" fn unit_maps(first: *mut *mut u8, second: *mut *mut u8) -> CUresult {
    slot(
        "unit-maps[4]",
        |out| {
            trace_arg(out, "first", &first);
            trace_arg(out, "second", &second);
        },
        || {
            if first.is_null() || second.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let (a, b) = call_with(
                special::UNIT_MAPS.0,
                |_| {},
                |dec| {
                    let a = dec.get_bytes().map_err(bad_response)?.to_vec();
                    let b = dec.get_bytes().map_err(bad_response)?.to_vec();
                    Ok((a, b))
                },
            )?;
            let pa = guest_copy(&a)?;
            let pb = match guest_copy(&b) {
                Ok(p) => p,
                Err(e) => {
                    release(pa);
                    return Err(e);
                }
            };
            // SAFETY: both checked non-NULL, each valid for one pointer write (runtime contract).
            unsafe {
                first.write(pa);
                second.write(pb);
            }
            Ok(())
        },
    )
}

/// Frees `p` if slot 4 handed it out; says whether it did.
fn release(p: *mut u8) -> bool {
    if !handed_out().remove(&(p as usize)) {
        return false;
    }
    // SAFETY: `p` came from `malloc` in `guest_copy` and was just removed from the set, so it is
    // freed exactly once.
    unsafe { libc::free(p.cast()) };
    true
}

/// Slot 13.
extern "system" fn free_unit_maps(first: *mut u8, second: *mut u8) -> CUresult {
    slot(
        "unit-maps[13]",
        |out| {
            trace_arg(out, "first", &first);
            trace_arg(out, "second", &second);
        },
        || {
            let mut ok = true;
            for p in [first, second] {
                if !p.is_null() && !release(p) {
                    log!(
                        Level::Warn,
                        "unit-maps[13]: {p:p} was not handed out by slot 4 (CUDA_ERROR_INVALID_VALUE)"
                    );
                    ok = false;
                }
            }
            if ok {
                Ok(())
            } else {
                Err(CuError::INVALID_VALUE)
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_freed_once_and_strangers_are_refused() {
        let a = guest_copy(&[0, 1, 2, 3]).expect("malloc");
        let b = guest_copy(&[]).expect("malloc");
        // SAFETY: `a` holds the four bytes just copied.
        assert_eq!(unsafe { std::slice::from_raw_parts(a, 4) }, &[0, 1, 2, 3]);
        assert_eq!(free_unit_maps(a, b), CUresult::CUDA_SUCCESS);
        assert_eq!(
            free_unit_maps(a, std::ptr::null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        let mut local = 0u8;
        assert_eq!(
            free_unit_maps(&mut local, std::ptr::null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }

    #[test]
    fn null_out_pointers_are_refused_before_any_call() {
        let mut p = std::ptr::null_mut();
        assert_eq!(
            unit_maps(&mut p, std::ptr::null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert!(p.is_null());
    }
}
