//! `cuGetErrorName` and `cuGetErrorString`, answered locally from `cuda.h`'s `CUresult` enum.

use std::ffi::c_char;

use cuda_headers::{results, CUresult, CuError, CuResult};

/// Stores the name of `error` in `*pStr`.
///
/// # Safety
/// `pStr` is NULL or valid for one pointer write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL `pStr` or an unknown code (then `*pStr` is NULL, as the
/// real driver does).
#[allow(non_snake_case)]
pub unsafe fn cuGetErrorName(error: CUresult, pStr: *mut *const c_char) -> CuResult {
    // SAFETY: forwarded from the caller.
    unsafe { answer(error, pStr, |r| r.name.as_ptr()) }
}

/// Stores a description of `error` in `*pStr`.
///
/// # Safety
/// `pStr` is NULL or valid for one pointer write.
///
/// # Errors
/// As [`cuGetErrorName`].
#[allow(non_snake_case)]
pub unsafe fn cuGetErrorString(error: CUresult, pStr: *mut *const c_char) -> CuResult {
    // SAFETY: forwarded from the caller.
    unsafe { answer(error, pStr, |r| r.description.as_ptr()) }
}

/// # Safety
/// `out` is NULL or valid for one pointer write.
unsafe fn answer(
    error: CUresult,
    out: *mut *const c_char,
    pick: impl Fn(&results::ResultCode) -> *const c_char,
) -> CuResult {
    if out.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (value, result) = match results::lookup(error.0) {
        Some(code) => (pick(code), Ok(())),
        None => (std::ptr::null(), Err(CuError::INVALID_VALUE)),
    };
    // SAFETY: `out` is non-null and, by the caller's contract, valid for a pointer write.
    unsafe { out.write(value) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn known_unknown_and_null() {
        let mut out: *const c_char = std::ptr::null();
        // SAFETY: `out` is a valid local.
        let ok = unsafe { cuGetErrorName(CUresult::CUDA_ERROR_OUT_OF_MEMORY, &mut out) };
        assert_eq!(ok, Ok(()));
        // SAFETY: the handler stored a pointer to a static C string.
        assert_eq!(unsafe { CStr::from_ptr(out) }, c"CUDA_ERROR_OUT_OF_MEMORY");
        // SAFETY: as above.
        let ok = unsafe { cuGetErrorString(CUresult::CUDA_SUCCESS, &mut out) };
        assert_eq!(ok, Ok(()));
        // SAFETY: as above.
        assert!(unsafe { CStr::from_ptr(out) }
            .to_bytes()
            .starts_with(b"The API call returned"));
        // SAFETY: `out` is a valid local.
        let unknown = unsafe { cuGetErrorString(CUresult(9_999_999), &mut out) };
        assert_eq!(unknown, Err(CuError::INVALID_VALUE));
        assert!(out.is_null());
        // SAFETY: a NULL out-pointer is checked before any write.
        let null = unsafe { cuGetErrorName(CUresult::CUDA_SUCCESS, std::ptr::null_mut()) };
        assert_eq!(null, Err(CuError::INVALID_VALUE));
    }
}
