//! The `CUresult` codes with their names and descriptions, for `cuGetErrorName`/`cuGetErrorString`.

use std::ffi::CStr;

/// One `CUresult` enumerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCode {
    /// The numeric value.
    pub code: u32,
    /// The enumerator's name, e.g. `CUDA_ERROR_INVALID_VALUE`.
    pub name: &'static CStr,
    /// The first sentence of the header's comment on it.
    pub description: &'static CStr,
}

include!("generated/results.rs");

/// Looks a code up; `None` for a value `cuda.h` does not define.
pub fn lookup(code: u32) -> Option<&'static ResultCode> {
    RESULT_CODES
        .binary_search_by_key(&code, |r| r.code)
        .ok()
        .map(|i| &RESULT_CODES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_matches_the_enum() {
        assert!(RESULT_CODES.windows(2).all(|w| w[0].code < w[1].code));
        assert_eq!(lookup(0).map(|r| r.name), Some(c"CUDA_SUCCESS"));
        assert_eq!(
            lookup(crate::CUresult::CUDA_ERROR_NOT_SUPPORTED.0).map(|r| r.name),
            Some(c"CUDA_ERROR_NOT_SUPPORTED")
        );
        assert_eq!(
            lookup(crate::CUresult::CUDA_ERROR_UNKNOWN.0).map(|r| r.name),
            Some(c"CUDA_ERROR_UNKNOWN")
        );
        assert!(lookup(123_456).is_none());
        assert!(RESULT_CODES.iter().all(|r| !r.description.is_empty()));
    }
}
