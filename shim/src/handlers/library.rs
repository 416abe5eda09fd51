//! Library and module lookups the generated code cannot express, and batched stream memory
//! operations. Host halves: `host/src/dispatch/handlers/library.rs`.
#![allow(non_snake_case)]

use std::ffi::{c_char, c_void, CStr};

use cuda_headers::*;

use super::arrays::{get_handles, slice, write, write_all};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// The library's kernels: `u64 library, u32 n` → `n × u64`.
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
    if kernels.is_null() && numKernels > 0 {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuLibraryEnumerateKernels),
        |enc| {
            enc.put(lib as u64);
            enc.put(numKernels);
        },
        |dec| {
            let got: Vec<CUkernel> = get_handles(dec, numKernels as usize)?;
            // SAFETY: per the contract, `numKernels` entries.
            unsafe { write_all(kernels, &got) };
            Ok(())
        },
    )
}

/// The module's functions: `u64 module, u32 n` → `n × u64` (as for
/// [`cuLibraryEnumerateKernels`]).
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
    if functions.is_null() && numFunctions > 0 {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuModuleEnumerateFunctions),
        |enc| {
            enc.put(module as u64);
            enc.put(numFunctions);
        },
        |dec| {
            let got: Vec<CUfunction> = get_handles(dec, numFunctions as usize)?;
            // SAFETY: per the contract, `numFunctions` entries.
            unsafe { write_all(functions, &got) };
            Ok(())
        },
    )
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
