//! Typed results of the driver calls the host makes on its own behalf (cudarc's `driver::result`
//! is the model): a missing function or a failed call is a [`CallError`] holding a [`CuError`],
//! so callers neither transmute symbols nor compare raw codes with numbers of their own.

use std::ffi::c_int;

use cuda_headers::{cu_result, CUresult, CuError};

use super::real;

/// Why a driver call did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The driver does not export the function (or no driver is loaded yet).
    #[error("the CUDA driver lacks {0}")]
    Missing(&'static str),
    /// The function ran and returned an error.
    #[error("{function} failed with {error}")]
    Failed {
        /// The driver function.
        function: &'static str,
        /// What it returned.
        error: CuError,
    },
}

/// The function `real::$name()` resolved, or [`CallError::Missing`].
macro_rules! resolve {
    ($name:ident) => {
        real::$name().ok_or(CallError::Missing(stringify!($name)))
    };
}

fn checked(function: &'static str, code: CUresult) -> Result<(), CallError> {
    cu_result::check(code).map_err(|error| CallError::Failed { function, error })
}

/// `cuInit(flags)`.
///
/// # Errors
/// [`CallError`]: no `cuInit`, or its error (`CUDA_ERROR_NO_DEVICE` without a GPU).
pub fn init(flags: u32) -> Result<(), CallError> {
    let init = resolve!(cuInit)?;
    // SAFETY: cuInit takes a flags word and has no other preconditions.
    checked("cuInit", unsafe { init(flags) })
}

/// `cuDeviceGetCount`: how many devices the driver sees.
///
/// # Errors
/// [`CallError`]: no `cuDeviceGetCount`, or its error.
pub fn device_count() -> Result<i32, CallError> {
    let get = resolve!(cuDeviceGetCount)?;
    let mut count: c_int = 0;
    // SAFETY: `count` is a live, writable int for the duration of the call.
    checked("cuDeviceGetCount", unsafe { get(&mut count) })?;
    Ok(count)
}

/// `cuDriverGetVersion`: the driver's CUDA version (`1000 * major + 10 * minor`).
///
/// # Errors
/// [`CallError`]: no `cuDriverGetVersion`, or its error.
pub fn driver_version() -> Result<i32, CallError> {
    let get = resolve!(cuDriverGetVersion)?;
    let mut version: c_int = 0;
    // SAFETY: `version` is a live, writable int for the duration of the call.
    checked("cuDriverGetVersion", unsafe { get(&mut version) })?;
    Ok(version)
}
