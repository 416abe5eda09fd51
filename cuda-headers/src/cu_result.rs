//! A typed view of `CUresult`: `Result<(), CuError>`, where [`CuError`] is a non-zero code, so `?`
//! works in handlers and the value still fits in a `CUresult`. Every code has a named constant,
//! `CuError::OUT_OF_MEMORY` for `CUDA_ERROR_OUT_OF_MEMORY`, generated from `cuda.h`.

use std::fmt;
use std::num::NonZeroU32;

use crate::CUresult;

/// A failed `CUresult`: any code but `CUDA_SUCCESS`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CuError(NonZeroU32);

/// The result of a driver call: `Ok` is `CUDA_SUCCESS`.
pub type CuResult<T = ()> = Result<T, CuError>;

// The niche of `NonZeroU32` makes `CuResult<()>` exactly as large as the C enum.
const _: () = assert!(std::mem::size_of::<CuResult>() == std::mem::size_of::<CUresult>());
const _: () = assert!(std::mem::size_of::<CuError>() == std::mem::size_of::<CUresult>());

// One named constant per non-zero code of `cuda.h` (`CuError::INVALID_VALUE`, …), generated from
// its `CUresult` enumerators; `every_code_has_its_named_constant` checks them against the
// driver's own table (`crate::results`).
include!("generated/errors.rs");

impl CuError {
    const fn from_const(code: CUresult) -> Self {
        match NonZeroU32::new(code.0) {
            Some(code) => Self(code),
            None => panic!("CUDA_SUCCESS is not an error"),
        }
    }

    /// The error for a non-success code; `None` for `CUDA_SUCCESS`.
    pub const fn new(code: CUresult) -> Option<Self> {
        match NonZeroU32::new(code.0) {
            Some(code) => Some(Self(code)),
            None => None,
        }
    }

    /// The raw code.
    pub const fn code(self) -> CUresult {
        CUresult(self.0.get())
    }

    /// The code's name as the driver gives it, e.g. `CUDA_ERROR_NOT_SUPPORTED`, if the driver
    /// names the code (`crate::results`).
    pub fn name(self) -> Option<&'static str> {
        crate::results::lookup(self.0.get()).and_then(|r| r.name.to_str().ok())
    }
}

/// Splits a raw code into the typed form.
pub fn check(code: CUresult) -> CuResult {
    match CuError::new(code) {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// Folds the typed form back into a raw code.
pub fn to_code(result: CuResult) -> CUresult {
    match result {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(error) => error.code(),
    }
}

impl fmt::Debug for CuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "CUresult({})", self.0),
        }
    }
}

impl fmt::Display for CuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for CuError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_codes() {
        assert_eq!(check(CUresult::CUDA_SUCCESS), Ok(()));
        assert_eq!(
            check(CUresult::CUDA_ERROR_NOT_SUPPORTED),
            Err(CuError::NOT_SUPPORTED)
        );
        assert_eq!(to_code(Err(CuError::UNKNOWN)), CUresult::CUDA_ERROR_UNKNOWN);
        assert_eq!(to_code(Ok(())), CUresult::CUDA_SUCCESS);
        assert_eq!(
            CuError::NOT_INITIALIZED.to_string(),
            "CUDA_ERROR_NOT_INITIALIZED(3)"
        );
        assert_eq!(
            CuError::new(CUresult(77_777)).map(|e| e.to_string()),
            Some("CUresult(77777)".into())
        );
    }

    #[test]
    fn every_code_has_its_named_constant() {
        assert_eq!(
            CuError::OUT_OF_MEMORY.code(),
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(
            CuError::HOST_MEMORY_NOT_REGISTERED.name(),
            Some("CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED")
        );
        // Each constant's doc line reads "/// `CUDA_ERROR_X` (code): …": the header's enumerators
        // and the driver's table must name the same codes the same way.
        let source = include_str!("generated/errors.rs");
        let from_header: Vec<(u32, &str)> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("/// `"))
            .map(|l| {
                let (name, rest) = l.split_once("` (").expect("name");
                let (code, _) = rest.split_once(')').expect("code");
                (code.parse().expect("numeric code"), name)
            })
            .collect();
        assert_eq!(from_header.len(), source.matches("pub const ").count());
        let from_driver: Vec<(u32, &str)> = crate::results::RESULT_CODES
            .iter()
            .filter(|r| r.code != 0)
            .map(|r| (r.code, r.name.to_str().expect("ASCII")))
            .collect();
        assert_eq!(from_header, from_driver);
    }
}
