//! `a094798c-2e74-2e74-93f2-0800200c0a66`: tools runtime callback hooks (7 words; the real
//! driver's size word is 56).
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 56 |
//! | 2 | `(void **buffer, size_t *size)` | a zeroed static buffer of 1024 words, size 1024 |
//! | 6 | `(void **buffer, size_t *size)` | a zeroed static buffer of 14 words, size 14 |
//! | 1, 3–5 | unknown | [`unknown_slot!`](super::unknown_slot) |
//!
//! The buffers are where the runtime keeps tool callback state; nothing in the shim reads them.
//! Their sizes follow public work (ZLUDA reports 1024 and 14 elements); each buffer holds that
//! many 8-byte words, so a runtime that counts in words or in bytes stays inside it.

use std::cell::UnsafeCell;
use std::ffi::c_void;

use cuda_headers::CuError;

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};

/// A zeroed buffer handed to the runtime, which writes it.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Buffer<const N: usize>(UnsafeCell<[u64; N]>);

// SAFETY: the shim never reads or writes the buffer after handing it out; only the runtime does.
unsafe impl<const N: usize> Sync for Buffer<N> {}

impl<const N: usize> Buffer<N> {
    const fn new() -> Self {
        Self(UnsafeCell::new([0; N]))
    }
}

static BUFFER_2: Buffer<1024> = Buffer::new();
static BUFFER_6: Buffer<14> = Buffer::new();

/// The table.
pub static TABLE: ExportTable<7> = ExportTable([
    ExportTable::<7>::size_word(),
    unknown_slot!("tools-callback-hooks", 1),
    buffer_2 as *const c_void,
    unknown_slot!("tools-callback-hooks", 3),
    unknown_slot!("tools-callback-hooks", 4),
    unknown_slot!("tools-callback-hooks", 5),
    buffer_6 as *const c_void,
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("a094798c2e742e7493f20800200c0a66"),
    name: "tools-callback-hooks",
    table: || TABLE.address(),
};

fn hand_out<const N: usize>(
    name: &'static str,
    buffer: &'static Buffer<N>,
    out: *mut *mut c_void,
    size: *mut usize,
) {
    slot(
        name,
        |o| {
            trace_arg(o, "buffer", &out);
            trace_arg(o, "size", &size);
        },
        || {
            if out.is_null() || size.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: both out-pointers are non-NULL and valid for one write (runtime contract).
            unsafe {
                out.write(buffer.0.get().cast());
                size.write(N);
            }
            Ok(())
        },
    );
}

/// Slot 2.
extern "system" fn buffer_2(out: *mut *mut c_void, size: *mut usize) {
    hand_out("tools-callback-hooks[2] buffer", &BUFFER_2, out, size);
}

/// Slot 6.
extern "system" fn buffer_6(out: *mut *mut c_void, size: *mut usize) {
    hand_out("tools-callback-hooks[6] buffer", &BUFFER_6, out, size);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_zeroed_buffers() {
        let (mut a, mut b) = (std::ptr::null_mut(), std::ptr::null_mut());
        let (mut sa, mut sb) = (0usize, 0usize);
        buffer_2(&mut a, &mut sa);
        buffer_6(&mut b, &mut sb);
        assert_eq!((sa, sb), (1024, 14));
        assert!(!a.is_null() && !b.is_null() && a != b);
        buffer_2(std::ptr::null_mut(), std::ptr::null_mut());
    }
}
