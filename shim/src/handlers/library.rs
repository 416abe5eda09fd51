//! Library and module lookups the generated code cannot express, and batched stream memory
//! operations. Host halves: `host/src/dispatch/handlers/library.rs`.
#![allow(non_snake_case)]

use std::ffi::{c_char, c_void, CStr};

use cuda_headers::*;

use super::arrays::{get_handles, slice, write, write_all};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// The handles the host enumerates for `owner` (a library's kernels, a module's functions):
/// `u64 owner, u32 n` → `n × u64`, written to `out`.
///
/// # Safety
/// `out` holds `n` entries.
unsafe fn enumerate<T>(id: u32, out: *mut *mut T, n: u32, owner: u64) -> CuResult {
    if out.is_null() && n > 0 {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(owner);
            enc.put(n);
        },
        |dec| {
            let got: Vec<*mut T> = get_handles(dec, n as usize)?;
            // SAFETY: per the contract, `n` entries.
            unsafe { write_all(out, &got) };
            Ok(())
        },
    )
}

/// The library's kernels.
///
/// # Safety
/// `kernels` holds `numKernels` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuLibraryEnumerateKernels(
    kernels: *mut CUkernel,
    numKernels: u32,
    lib: CUlibrary,
) -> CuResult {
    // SAFETY: as this function's contract.
    unsafe {
        enumerate(
            shim_macros::cuda_call_id!(cuLibraryEnumerateKernels),
            kernels,
            numKernels,
            lib as u64,
        )
    }
}

/// The module's functions.
///
/// # Safety
/// `functions` holds `numFunctions` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleEnumerateFunctions(
    functions: *mut CUfunction,
    numFunctions: u32,
    module: CUmodule,
) -> CuResult {
    // SAFETY: as this function's contract.
    unsafe {
        enumerate(
            shim_macros::cuda_call_id!(cuModuleEnumerateFunctions),
            functions,
            numFunctions,
            module as u64,
        )
    }
}

/// Not supported: the answer is a host function pointer (unified function), meaningless here.
///
/// # Safety
/// Always safe: nothing is read or written.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED`.
pub unsafe fn cuLibraryGetUnifiedFunction(
    _fptr: *mut *mut c_void,
    _library: CUlibrary,
    _symbol: *const c_char,
) -> CuResult {
    log!(
        Level::Warn,
        "cuLibraryGetUnifiedFunction: host function pointers do not cross to the guest"
    );
    Err(CuError::NOT_SUPPORTED)
}

/// `u64 module, bytes name` → `u64 handle`.
fn lookup(id: u32, out: *mut u64, module: CUmodule, name: *const c_char) -> CuResult {
    if out.is_null() || name.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: a NUL-terminated string (driver API contract).
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    call_with(
        id,
        |enc| {
            enc.put(module as u64);
            enc.put_bytes(name);
        },
        |dec| {
            write(out, dec.get::<u64>().map_err(bad_response)?);
            Ok(())
        },
    )
}

/// A texture reference by name.
///
/// # Safety
/// `name` is a NUL-terminated string; `pTexRef` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleGetTexRef(
    pTexRef: *mut CUtexref,
    hmod: CUmodule,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuModuleGetTexRef),
        pTexRef.cast(),
        hmod,
        name,
    )
}

/// A surface reference by name.
///
/// # Safety
/// As [`cuModuleGetTexRef`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuModuleGetSurfRef(
    pSurfRef: *mut CUsurfref,
    hmod: CUmodule,
    name: *const c_char,
) -> CuResult {
    lookup(
        shim_macros::cuda_call_id!(cuModuleGetSurfRef),
        pSurfRef.cast(),
        hmod,
        name,
    )
}

macro_rules! batch_mem_op_fns {
    ($($name:ident),*) => { $(
        /// Batched waits and writes on device memory: `u64 stream, u32 n, n ×
        /// CUstreamBatchMemOpParams, u32 flags` (plain data: device addresses and values).
        ///
        /// # Safety
        /// `paramArray` holds `count` entries.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(stream: CUstream, count: u32, paramArray: *mut CUstreamBatchMemOpParams, flags: u32) -> CuResult {
            // SAFETY: per the contract.
            let ops = unsafe { slice(paramArray.cast_const(), count as usize) }?;
            call_with(
                shim_macros::cuda_call_id!($name),
                |enc| {
                    enc.put(stream as u64);
                    enc.put(count);
                    for op in ops {
                        // SAFETY: a union of plain data.
                        unsafe { enc.put_raw(op) };
                    }
                    enc.put(flags);
                },
                |_| Ok(()),
            )
        }
    )* };
}
batch_mem_op_fns!(cuStreamBatchMemOp, cuStreamBatchMemOp_ptsz);
