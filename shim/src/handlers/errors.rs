//! `cuGetErrorName` and `cuGetErrorString`, answered locally with exactly what the real driver
//! answers (`cuda_headers::results`: the table read from driver 580.159.04, compiled in from
//! `cuda-headers/probe/errstrings-580.159.04.tsv`).

use std::ffi::c_char;

use cuda_headers::{results, CUresult, CuError, CuResult};

/// Stores the name of `error` in `*pStr`.
///
/// # Safety
/// `pStr` is NULL or valid for one pointer write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL `pStr`, and for a code the driver does not name: then
/// `*pStr` is NULL, as `cuda.h` documents (the observed table holds no unknown code).
#[allow(non_snake_case)]
pub unsafe fn cuGetErrorName(error: CUresult, pStr: *mut *const c_char) -> CuResult {
    // SAFETY: forwarded from the caller.
    unsafe { answer(error, pStr, |r| r.name.as_ptr()) }
}

/// Stores the driver's description of `error` in `*pStr` (`"invalid argument"`, …).
///
/// # Safety
/// `pStr` is NULL or valid for one pointer write.
///
/// # Errors
/// As [`cuGetErrorName`].
#[allow(non_snake_case)]
pub unsafe fn cuGetErrorString(error: CUresult, pStr: *mut *const c_char) -> CuResult {
    // SAFETY: forwarded from the caller.
    unsafe { answer(error, pStr, |r| r.string.as_ptr()) }
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

    /// Both answers for `code`, read back as text.
    fn both(code: u32) -> (CuResult, *const c_char, CuResult, *const c_char) {
        let mut name: *const c_char = c"untouched".as_ptr();
        let mut string: *const c_char = c"untouched".as_ptr();
        // SAFETY: valid locals for one pointer write each.
        let (r_name, r_string) = unsafe {
            (
                cuGetErrorName(CUresult(code), &mut name),
                cuGetErrorString(CUresult(code), &mut string),
            )
        };
        (r_name, name, r_string, string)
    }

    #[test]
    fn every_observed_code_gets_the_drivers_name_and_string() {
        // The committed file read with an ordinary parser, independently of the compile-time one.
        let rows: Vec<(u32, &str, &str)> = cuda_headers::results::SOURCE
            .lines()
            .map(|line| {
                let mut f = line.split('\t');
                let code = f.next().and_then(|c| c.parse().ok()).expect("code");
                (code, f.next().expect("name"), f.next().expect("string"))
            })
            .collect();
        assert_eq!(rows.len(), 101);
        for (code, name, string) in rows {
            let (r_name, got_name, r_string, got_string) = both(code);
            assert_eq!((r_name, r_string), (Ok(()), Ok(())), "{code}");
            // SAFETY: the handlers stored pointers to static C strings.
            let (got_name, got_string) =
                unsafe { (CStr::from_ptr(got_name), CStr::from_ptr(got_string)) };
            assert_eq!(got_name.to_str(), Ok(name), "{code}");
            assert_eq!(got_string.to_str(), Ok(string), "{code}");
        }
    }

    #[test]
    fn short_strings_not_the_headers_comments() {
        let (_, _, _, string) = both(CUresult::CUDA_ERROR_OUT_OF_MEMORY.0);
        // SAFETY: a static C string.
        assert_eq!(unsafe { CStr::from_ptr(string) }, c"out of memory");
        let (_, name, _, string) = both(0);
        // SAFETY: static C strings.
        unsafe {
            assert_eq!(CStr::from_ptr(name), c"CUDA_SUCCESS");
            assert_eq!(CStr::from_ptr(string), c"no error");
        }
    }

    #[test]
    fn an_unknown_code_is_an_invalid_value_with_null() {
        for code in [9, 1000, 9_999_999, u32::MAX] {
            let (r_name, name, r_string, string) = both(code);
            assert_eq!(r_name, Err(CuError::INVALID_VALUE), "{code}");
            assert_eq!(r_string, Err(CuError::INVALID_VALUE), "{code}");
            assert!(name.is_null() && string.is_null(), "{code}");
        }
    }

    #[test]
    fn a_null_out_pointer_is_an_invalid_value() {
        // SAFETY: a NULL out-pointer is checked before any write.
        let null = unsafe { cuGetErrorName(CUresult::CUDA_SUCCESS, std::ptr::null_mut()) };
        assert_eq!(null, Err(CuError::INVALID_VALUE));
        // SAFETY: as above.
        let null = unsafe { cuGetErrorString(CUresult(12345), std::ptr::null_mut()) };
        assert_eq!(null, Err(CuError::INVALID_VALUE));
    }
}
