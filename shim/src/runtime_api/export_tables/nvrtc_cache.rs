//! `da9151d3-3ae6-cc41-a5c0-4f26d533e328`: the driver's compute cache, as NVRTC uses it (so as
//! CuPy, cuDNN's runtime-compiled engines, Triton and `torch.compile` use it). 7 words; the real
//! driver's first word is 56, a size word.
//!
//! How NVRTC 13.0 uses the table was read off its code (`libnvrtc.so.13`, `nvrtcCompileProgram`
//! and the helpers it calls; the strings it logs name each step: "[nvrtc cache] call to generate
//! cache key failed with error: ", "Successfully retrieved cached cubin from driver cache",
//! "DeleteCacheData found in compute cache"):
//!
//! | slot | NVRTC's call | answered here |
//! |---|---|---|
//! | 0 | size word; above 48, NVRTC frees outputs with slot 6 (else it asks for another table) | 56 |
//! | 1 | `make_key(&key, stage, bitcode, u32 length, options, build, date, u32, u32)`: 0 and a key, or an error and NVRTC compiles without the cache | [`make_key`] |
//! | 2 | `free_key(key)` | [`free_key`] |
//! | 3 | `get(key, 0, &output, &u32 size)`: 0 on a hit; NVRTC copies the output, then frees it with slot 6 | [`get`] |
//! | 4 | `put(key, 0, output, u32 size)`: after a miss, the cubin NVRTC compiled | [`put`] |
//! | 5 | not called by NVRTC 13.0 | [`unknown_slot!`] |
//! | 6 | `delete_output(output)` | [`delete_output`] |
//!
//! Slot 1 takes nine arguments, three of them on the stack. The export-table spy forwards six,
//! so under the spy the real driver read three stack words of the spy's own and answered 1 or 3
//! (`bench/results/2026-12-04-bench.md`); without the spy its cache served NVRTC (a compile took
//! 11.8 ms warm, 29.5 ms with `CUDA_CACHE_DISABLE=1`).
//!
//! The cache itself is [`crate::compile_cache`]: kept in the guest, keyed by every input above,
//! so no question reaches the host.

use std::ffi::{c_char, c_void, CStr};

use cuda_headers::{CUresult, CuError, CuResult};

use super::{slot, unknown_slot, ExportTable, Known};
use crate::compile_cache::{self, Key, KeyInputs};

/// What a key handed to NVRTC points to: the digest behind a check word, so that a pointer this
/// table did not make is refused rather than read as a key.
#[derive(Debug)]
struct KeyBox {
    check: u64,
    key: Key,
}

/// The check word of a live [`KeyBox`] ("vgpukey1").
const KEY_CHECK: u64 = u64::from_le_bytes(*b"vgpukey1");
/// A freed key's check word, so that a second free is refused.
const KEY_FREED: u64 = u64::from_le_bytes(*b"vgpufree");

fn error(code: CUresult) -> CuError {
    CuError::new(code).unwrap_or(CuError::UNKNOWN)
}

/// The key behind a pointer this table made.
///
/// # Safety
/// `key` is NULL or a pointer [`make_key`] handed out and [`free_key`] has not freed.
unsafe fn key_at<'a>(key: *const c_void) -> CuResult<&'a Key> {
    if key.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: made by `make_key` from a `Box<KeyBox>` and not yet freed (contract).
    let boxed = unsafe { &*key.cast::<KeyBox>() };
    if boxed.check != KEY_CHECK {
        return Err(error(CUresult::CUDA_ERROR_INVALID_HANDLE));
    }
    Ok(&boxed.key)
}

/// A NUL-terminated string NVRTC passes, without its NUL; empty for NULL.
///
/// # Safety
/// `text` is NULL or a NUL-terminated string.
unsafe fn c_bytes<'a>(text: *const c_char) -> &'a [u8] {
    if text.is_null() {
        return &[];
    }
    // SAFETY: NUL-terminated (contract).
    unsafe { CStr::from_ptr(text) }.to_bytes()
}

/// Slot 1: a key for one compile stage, made of every input (see the module's table).
#[allow(clippy::too_many_arguments)]
extern "system" fn make_key(
    key_out: *mut *mut c_void,
    stage: u32,
    data: *const u8,
    length: u32,
    options: *const c_char,
    build: *const c_char,
    date: *const c_char,
    word_a: u32,
    word_b: u32,
) -> CUresult {
    slot(
        "da9151d3[1] make_key",
        |out| {
            super::trace_arg(out, "stage", &stage);
            super::trace_arg(out, "data", &data);
            super::trace_arg(out, "length", &length);
            super::trace_arg(out, "words", &[word_a, word_b]);
        },
        || {
            if key_out.is_null() || data.is_null() || length == 0 {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: non-NULL and valid for one write (NVRTC's own local).
            unsafe { key_out.write(std::ptr::null_mut()) };
            if !compile_cache::global().enabled() {
                return Err(CuError::NOT_SUPPORTED);
            }
            // SAFETY: NVRTC passes its program's bitcode and that bitcode's length, and
            // NUL-terminated strings (or NULL) for the rest.
            let inputs = unsafe {
                KeyInputs {
                    stage,
                    data: std::slice::from_raw_parts(data, length as usize),
                    options: c_bytes(options),
                    build: c_bytes(build),
                    date: c_bytes(date),
                    words: [word_a, word_b],
                }
            };
            let boxed = Box::new(KeyBox {
                check: KEY_CHECK,
                key: inputs.digest(),
            });
            // SAFETY: checked non-NULL above.
            unsafe { key_out.write(Box::into_raw(boxed).cast()) };
            Ok(())
        },
    )
}

/// Slot 2: frees a key.
extern "system" fn free_key(key: *mut c_void) -> CUresult {
    slot(
        "da9151d3[2] free_key",
        |out| super::trace_arg(out, "key", &key),
        || {
            // SAFETY: a key this table made (NVRTC frees each key once, after its last use).
            unsafe { key_at(key) }?;
            let boxed = key.cast::<KeyBox>();
            // SAFETY: checked live above; the check word is overwritten before the box is freed so
            // that a second free through a stale pointer is more likely refused than run.
            unsafe {
                (*boxed).check = KEY_FREED;
                drop(Box::from_raw(boxed));
            }
            Ok(())
        },
    )
}

/// Slot 3: the output kept under a key, in a `malloc` block NVRTC gives back through slot 6;
/// `CUDA_ERROR_NOT_FOUND` on a miss.
extern "system" fn get(
    key: *const c_void,
    flags: u32,
    output: *mut *mut c_void,
    size: *mut u32,
) -> CUresult {
    slot(
        "da9151d3[3] get",
        |out| {
            super::trace_arg(out, "key", &key);
            super::trace_arg(out, "flags", &flags);
        },
        || {
            if output.is_null() || size.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            if flags != 0 {
                return Err(CuError::NOT_SUPPORTED);
            }
            // SAFETY: a key this table made (NVRTC's contract).
            let key = unsafe { key_at(key) }?;
            let data = compile_cache::global()
                .get(key)
                .ok_or_else(|| error(CUresult::CUDA_ERROR_NOT_FOUND))?;
            let length = u32::try_from(data.len()).map_err(|_| CuError::INVALID_VALUE)?;
            // SAFETY: plain allocation of at least one byte; checked for NULL below.
            let block = unsafe { libc::malloc(data.len().max(1)) }.cast::<u8>();
            if block.is_null() {
                return Err(error(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
            }
            // SAFETY: `block` holds at least `data.len()` bytes and does not overlap `data`;
            // `output` and `size` are non-NULL and valid for one write each (NVRTC's locals).
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), block, data.len());
                output.write(block.cast());
                size.write(length);
            }
            Ok(())
        },
    )
}

/// Slot 4: keeps the output NVRTC compiled under a key.
extern "system" fn put(key: *const c_void, flags: u32, data: *const u8, size: u32) -> CUresult {
    slot(
        "da9151d3[4] put",
        |out| {
            super::trace_arg(out, "key", &key);
            super::trace_arg(out, "flags", &flags);
            super::trace_arg(out, "size", &size);
        },
        || {
            if data.is_null() && size != 0 {
                return Err(CuError::INVALID_VALUE);
            }
            if flags != 0 {
                return Err(CuError::NOT_SUPPORTED);
            }
            // SAFETY: a key this table made (NVRTC's contract).
            let key = unsafe { key_at(key) }?;
            let bytes = if size == 0 {
                &[][..]
            } else {
                // SAFETY: NVRTC passes its output and that output's size.
                unsafe { std::slice::from_raw_parts(data, size as usize) }
            };
            compile_cache::global().put(key, bytes).map_err(|e| {
                crate::log::log!(crate::log::Level::Info, "NVRTC compile cache: {e}");
                match e {
                    compile_cache::StoreError::Off => CuError::NOT_SUPPORTED,
                    compile_cache::StoreError::TooLarge(_) => CuError::INVALID_VALUE,
                    compile_cache::StoreError::Directory { .. } => {
                        error(CUresult::CUDA_ERROR_OPERATING_SYSTEM)
                    }
                }
            })
        },
    )
}

/// Slot 6: frees an output [`get`] handed out.
extern "system" fn delete_output(output: *mut c_void) -> CUresult {
    slot(
        "da9151d3[6] delete_output",
        |out| super::trace_arg(out, "output", &output),
        || {
            // SAFETY: NULL or a block `get` allocated with `malloc`, freed once (NVRTC's contract).
            unsafe { libc::free(output) };
            Ok(())
        },
    )
}

/// The table.
pub static TABLE: ExportTable<7> = ExportTable([
    ExportTable::<7>::size_word(),
    make_key as extern "system" fn(_, _, _, _, _, _, _, _, _) -> CUresult as *const c_void,
    free_key as extern "system" fn(_) -> CUresult as *const c_void,
    get as extern "system" fn(_, _, _, _) -> CUresult as *const c_void,
    put as extern "system" fn(_, _, _, _) -> CUresult as *const c_void,
    unknown_slot!("da9151d3", 5),
    delete_output as extern "system" fn(_) -> CUresult as *const c_void,
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("da9151d33ae6cc41a5c04f26d533e328"),
    name: "da9151d3-compute-cache",
    table: || TABLE.address(),
};

#[cfg(test)]
mod tests {
    use super::*;

    type MakeKey = extern "system" fn(
        *mut *mut c_void,
        u32,
        *const u8,
        u32,
        *const c_char,
        *const c_char,
        *const c_char,
        u32,
        u32,
    ) -> CUresult;
    type FreeKey = extern "system" fn(*mut c_void) -> CUresult;
    type Get = extern "system" fn(*const c_void, u32, *mut *mut c_void, *mut u32) -> CUresult;
    type Put = extern "system" fn(*const c_void, u32, *const u8, u32) -> CUresult;
    type Delete = extern "system" fn(*mut c_void) -> CUresult;

    /// The table's slots, called through its words as NVRTC calls them.
    fn slots() -> (MakeKey, FreeKey, Get, Put, Delete) {
        // SAFETY: each word is the function of that signature (the table above).
        unsafe {
            (
                std::mem::transmute::<*const c_void, MakeKey>(TABLE.0[1]),
                std::mem::transmute::<*const c_void, FreeKey>(TABLE.0[2]),
                std::mem::transmute::<*const c_void, Get>(TABLE.0[3]),
                std::mem::transmute::<*const c_void, Put>(TABLE.0[4]),
                std::mem::transmute::<*const c_void, Delete>(TABLE.0[6]),
            )
        }
    }

    fn key_for(make: MakeKey, bitcode: &[u8], options: &CStr) -> *mut c_void {
        let mut key = std::ptr::null_mut();
        let rc = make(
            &mut key,
            1,
            bitcode.as_ptr(),
            bitcode.len() as u32,
            options.as_ptr(),
            c"HOST64".as_ptr(),
            c"Aug 20 202514:13:52".as_ptr(),
            0,
            1,
        );
        assert_eq!(rc, CUresult::CUDA_SUCCESS);
        assert!(!key.is_null());
        key
    }

    #[test]
    fn a_miss_then_a_put_then_a_hit_as_nvrtc_runs_them() {
        // Unit tests get a memory-only store.
        assert!(compile_cache::global().enabled());
        let (make, free, get, put, delete) = slots();
        assert_eq!(
            TABLE.0[0] as usize, 56,
            "NVRTC needs a size above 48 to use slot 6"
        );
        let unique = format!(
            "BC\u{c0}\u{de} {:?} {}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        let bitcode = unique.as_bytes();
        let key = key_for(make, bitcode, c" -arch=sm_90");

        let mut output = std::ptr::null_mut();
        let mut size = 0u32;
        assert_eq!(
            get(key, 0, &mut output, &mut size),
            CUresult::CUDA_ERROR_NOT_FOUND
        );
        let cubin = b"\x7fELF cubin bytes";
        assert_eq!(
            put(key, 0, cubin.as_ptr(), cubin.len() as u32),
            CUresult::CUDA_SUCCESS
        );
        assert_eq!(free(key), CUresult::CUDA_SUCCESS);

        // The next compile of the same program makes an equal key and gets the cubin back.
        let again = key_for(make, bitcode, c" -arch=sm_90");
        assert_eq!(
            get(again, 0, &mut output, &mut size),
            CUresult::CUDA_SUCCESS
        );
        assert_eq!(size as usize, cubin.len());
        // SAFETY: `get` handed out `size` bytes at `output`.
        let got = unsafe { std::slice::from_raw_parts(output.cast::<u8>(), size as usize) };
        assert_eq!(got, cubin);
        assert_eq!(delete(output), CUresult::CUDA_SUCCESS);

        // Other options are another key: a miss.
        let other = key_for(make, bitcode, c" -arch=sm_80");
        assert_eq!(
            get(other, 0, &mut output, &mut size),
            CUresult::CUDA_ERROR_NOT_FOUND
        );
        assert_eq!(free(other), CUresult::CUDA_SUCCESS);
        assert_eq!(free(again), CUresult::CUDA_SUCCESS);
    }

    #[test]
    fn bad_arguments_are_refused_without_touching_anything() {
        let (make, free, get, put, _) = slots();
        let bitcode = b"BC\xc0\xde";
        let mut key = std::ptr::null_mut();
        let no_key = make(
            std::ptr::null_mut(),
            1,
            bitcode.as_ptr(),
            4,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            0,
        );
        assert_eq!(no_key, CUresult::CUDA_ERROR_INVALID_VALUE);
        let empty = make(
            &mut key,
            1,
            bitcode.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            0,
        );
        assert_eq!(empty, CUresult::CUDA_ERROR_INVALID_VALUE);
        assert!(key.is_null());

        // A pointer the table did not make is not a key.
        let mut not_a_key = [0u64; 5];
        let fake = not_a_key.as_mut_ptr().cast::<c_void>();
        let mut output = std::ptr::null_mut();
        let mut size = 0u32;
        assert_eq!(
            get(fake, 0, &mut output, &mut size),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(
            put(fake, 0, bitcode.as_ptr(), 4),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(free(fake), CUresult::CUDA_ERROR_INVALID_HANDLE);
        assert_eq!(
            free(std::ptr::null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert!(output.is_null());
        assert_eq!(not_a_key, [0; 5]);
        let key = key_for(make, bitcode, c"");
        assert_eq!(
            get(key, 1, &mut output, &mut size),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert_eq!(
            get(key, 0, std::ptr::null_mut(), &mut size),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(free(key), CUresult::CUDA_SUCCESS);
    }
}
