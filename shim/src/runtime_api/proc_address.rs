//! `cuGetProcAddress` / `cuGetProcAddress_v2`, answered locally from the table probed on the real
//! driver (`cuda_headers::proc_address`): no host call, so it works before `cuInit` and without a
//! host. Every pointer handed out is the shim's own export of the symbol the real driver would
//! have handed out, found with `dlsym` on the shim's own handle (never `RTLD_DEFAULT`/`RTLD_NEXT`,
//! which could find another libcuda loaded in the process).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, OnceLock};

use cuda_headers::proc_address::{resolve, Answer, SYMBOL_NOT_FOUND_RESULT, UNKNOWN_NAME};
use cuda_headers::CuResult;
use cuda_headers::{cu_result, cuuint64_t, CUdriverProcAddressQueryResult, CUresult, CuError};

use crate::log::{log, Level};
use crate::trace;

/// What a lookup answers, before it is written to the caller's out-pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The shim's export of this symbol.
    Found {
        /// The exported symbol the real driver hands out for the request.
        symbol: &'static str,
        /// Its address in the shim.
        address: usize,
    },
    /// NULL, with this status and result.
    Null {
        /// The `CUdriverProcAddressQueryResult` to report.
        status: CUdriverProcAddressQueryResult,
        /// The call's result.
        result: CUresult,
    },
}

/// The shim's own handle: `dladdr` of a function in it gives its path, and `dlopen` with
/// `RTLD_NOLOAD` returns the handle of the copy already loaded (adding one reference, kept for the
/// process's life). `None` when the shim is not a loaded shared object (unit tests).
fn own_handle() -> Option<usize> {
    static HANDLE: OnceLock<Option<usize>> = OnceLock::new();
    *HANDLE.get_or_init(|| {
        // SAFETY: an all-zero Dl_info is valid (NULL pointers); dladdr fills it for an address
        // inside a loaded object and returns 0 otherwise.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let anchor = own_handle as fn() -> Option<usize> as *const c_void;
        // SAFETY: `anchor` is an address of this library's code; `info` is valid for writes.
        if unsafe { libc::dladdr(anchor, &mut info) } == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: dli_fname is the NUL-terminated path of the object that holds `anchor`;
        // RTLD_NOLOAD never loads anything new.
        let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOLOAD | libc::RTLD_NOW) };
        (!handle.is_null()).then_some(handle as usize)
    })
}

/// The shim's own export named `symbol`, cached.
pub fn own_symbol(symbol: &'static str) -> Option<usize> {
    static CACHE: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&address) = cache.get(symbol) {
        return Some(address);
    }
    let handle = own_handle()?;
    let name = std::ffi::CString::new(symbol).ok()?;
    // SAFETY: `handle` came from dlopen and is never closed; `name` is NUL-terminated.
    let address = unsafe { libc::dlsym(handle as *mut c_void, name.as_ptr()) } as usize;
    if address == 0 {
        return None;
    }
    cache.insert(symbol, address);
    Some(address)
}

fn null(status: CUdriverProcAddressQueryResult, result: u32) -> Lookup {
    Lookup::Null {
        status,
        result: CUresult(result),
    }
}

/// NULL with SYMBOL_NOT_FOUND and `result`.
fn not_found(result: u32) -> Lookup {
    null(
        CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
        result,
    )
}

/// Answers one request the way the probed driver did, with `find` giving the address of an
/// exported symbol.
///
/// - flags other than 0, 1, 2: `CUDA_ERROR_INVALID_VALUE` (never observed; see
///   docs/runtime-api.md);
/// - a name the probed table does not hold (also `""`): the driver's answer for the names its
///   lookup lacked, [`UNKNOWN_NAME`]: NULL, SYMBOL_NOT_FOUND and `CUDA_SUCCESS`;
/// - otherwise the table's answer, including its NULL answers with the driver's own result code
///   (the probed driver returns `CUDA_SUCCESS` with VERSION_NOT_SUFFICIENT).
///
/// A symbol the table names that the shim does not export (a build out of step with its table;
/// a unit test rules it out) is logged and answered as an unknown name: the caller sees a driver
/// without that function rather than an error it never gets from a real driver.
pub fn lookup(
    name: &[u8],
    version: i32,
    flags: u64,
    find: impl FnOnce(&'static str) -> Option<usize>,
) -> Lookup {
    if flags > 2 {
        return null(
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
            CUresult::CUDA_ERROR_INVALID_VALUE.0,
        );
    }
    let answer = std::str::from_utf8(name)
        .ok()
        .and_then(|n| resolve(n, version, flags))
        .unwrap_or(UNKNOWN_NAME);
    match answer {
        Answer::Symbol(symbol) => match find(symbol) {
            Some(address) => Lookup::Found { symbol, address },
            None => {
                log!(
                    Level::Error,
                    "cuGetProcAddress: the shim does not export {symbol}"
                );
                not_found(SYMBOL_NOT_FOUND_RESULT)
            }
        },
        Answer::NotFound { result } => not_found(result),
        Answer::VersionNotSufficient { result } => null(
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
            result,
        ),
    }
}

/// # Safety
/// `symbol` is NULL or NUL-terminated; `pfn` and `status` are NULL or valid for one write.
unsafe fn get_proc_address(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: cuuint64_t,
    status: *mut CUdriverProcAddressQueryResult,
) -> CuResult {
    if symbol.is_null() || pfn.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract, a NUL-terminated string that lives for the call.
    let name = unsafe { CStr::from_ptr(symbol) }.to_bytes();
    let answer = lookup(name, version, flags, own_symbol);
    let (address, query) = match answer {
        Lookup::Found { address, .. } => (
            address as *mut c_void,
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS,
        ),
        Lookup::Null { status, .. } => (std::ptr::null_mut(), status),
    };
    // SAFETY: `pfn` is non-NULL and valid for one write (contract).
    unsafe { pfn.write(address) };
    if !status.is_null() {
        // SAFETY: non-NULL, valid for one write (contract).
        unsafe { status.write(query) };
    }
    if trace::enabled() {
        let shown = match answer {
            Lookup::Found { symbol, address } => format!("{symbol} {address:#x}"),
            Lookup::Null { status, result } => {
                format!("NULL status={} {}", status.0, trace::result_name(result))
            }
        };
        trace::write_line(&format!(
            "cuGetProcAddress {} version={version} flags={flags} -> {shown}",
            String::from_utf8_lossy(name)
        ));
    }
    match answer {
        Lookup::Found { .. } => Ok(()),
        Lookup::Null { result, .. } => cu_result::check(result),
    }
}

/// `cuGetProcAddress_v2`: the driver function for `symbol` at `cudaVersion` and `flags`.
///
/// # Safety
/// `symbol` is a NUL-terminated string; `pfn` is valid for one write; `symbolStatus` is NULL or
/// valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL arguments or unknown flags. A name the driver does not
/// know is not an error: `*pfn` is NULL and `*symbolStatus` SYMBOL_NOT_FOUND, as the probed
/// driver answers; other NULL answers carry the probed driver's result too.
pub unsafe fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cudaVersion: i32,
    flags: cuuint64_t,
    symbolStatus: *mut CUdriverProcAddressQueryResult,
) -> CuResult {
    // SAFETY: forwarded contract.
    unsafe { get_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus) }
}

/// `cuGetProcAddress` (CUDA 11.3's form, no status).
///
/// # Safety
/// As [`cuGetProcAddress_v2`].
///
/// # Errors
/// As [`cuGetProcAddress_v2`].
pub unsafe fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cudaVersion: i32,
    flags: cuuint64_t,
) -> CuResult {
    // SAFETY: forwarded contract; no status pointer.
    unsafe { get_proc_address(symbol, pfn, cudaVersion, flags, std::ptr::null_mut()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(symbol: &'static str) -> Option<usize> {
        Some(symbol.len())
    }

    #[test]
    fn follows_the_breakpoints() {
        assert_eq!(
            lookup(b"cuMemAlloc", 2000, 0, fake),
            Lookup::Found {
                symbol: "cuMemAlloc",
                address: 10
            }
        );
        assert!(matches!(
            lookup(b"cuMemAlloc", 3020, 0, fake),
            Lookup::Found {
                symbol: "cuMemAlloc_v2",
                ..
            }
        ));
        assert!(matches!(
            lookup(b"cuMemAlloc", 13000, 0, fake),
            Lookup::Found {
                symbol: "cuMemAlloc_v2",
                ..
            }
        ));
        assert!(matches!(
            lookup(b"cuMemcpyHtoD", 7000, 2, fake),
            Lookup::Found {
                symbol: "cuMemcpyHtoD_v2_ptds",
                ..
            }
        ));
        assert!(matches!(
            lookup(b"cuMemcpyHtoD", 7000, 1, fake),
            Lookup::Found {
                symbol: "cuMemcpyHtoD_v2",
                ..
            }
        ));
    }

    #[test]
    fn null_answers_carry_the_drivers_status_and_result() {
        assert_eq!(
            lookup(b"cuArrayGetPlane", 11010, 0, fake),
            Lookup::Null {
                status: CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
                result: CUresult::CUDA_SUCCESS
            }
        );
        assert_eq!(
            lookup(b"cuInit", 1000, 0, fake),
            Lookup::Null {
                status: CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
                result: CUresult::CUDA_SUCCESS
            },
            "below the first breakpoint"
        );
        for name in [&b"cuNoSuchFunction"[..], b"", b"cuEGLApiInit", b"\xff"] {
            assert_eq!(
                lookup(name, 13000, 0, fake),
                Lookup::Null {
                    status: CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
                    result: CUresult::CUDA_SUCCESS
                },
                "{name:?}: as the probed driver answers the names it lacks"
            );
        }
        assert_eq!(
            lookup(b"cuMemAlloc", 13000, 0, |_| None),
            lookup(b"cuNoSuchFunction", 13000, 0, fake),
            "a symbol the shim lacks is answered as an unknown name"
        );
        assert!(matches!(
            lookup(b"cuInit", 13000, 3, fake),
            Lookup::Null {
                result: CUresult::CUDA_ERROR_INVALID_VALUE,
                ..
            }
        ));
    }

    #[test]
    fn every_symbol_of_the_table_is_exported() {
        for b in cuda_headers::proc_address::BREAKPOINTS {
            if let Answer::Symbol(s) = b.answer {
                assert!(
                    crate::EXPORTED_FUNCTIONS.binary_search(&s).is_ok(),
                    "{s} is in the probed table but not exported"
                );
            }
        }
    }

    #[test]
    fn an_unknown_name_writes_null_and_symbol_not_found() {
        let mut pfn: *mut c_void = std::ptr::dangling_mut();
        let mut status = CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS;
        // SAFETY: a NUL-terminated name and valid out-pointers.
        let r = unsafe {
            cuGetProcAddress_v2(
                c"cuNoSuchFunction".as_ptr(),
                &mut pfn,
                13000,
                0,
                &mut status,
            )
        };
        assert_eq!(r, Ok(()));
        assert!(pfn.is_null());
        assert_eq!(
            status,
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
        );
    }

    #[test]
    fn null_arguments_are_invalid_values() {
        let mut pfn = std::ptr::null_mut();
        // SAFETY: NULL symbol is checked before anything is read.
        let r = unsafe { cuGetProcAddress(std::ptr::null(), &mut pfn, 13000, 0) };
        assert_eq!(r, Err(CuError::INVALID_VALUE));
        // SAFETY: NULL pfn is checked before anything is written.
        let r = unsafe { cuGetProcAddress(c"cuInit".as_ptr(), std::ptr::null_mut(), 13000, 0) };
        assert_eq!(r, Err(CuError::INVALID_VALUE));
    }
}
