//! The supervisor's start-up check: is there a driver, and does it see a GPU?

use std::path::Path;

use cuda_headers::CuError;

use crate::driver::result::{self, CallError};
use crate::driver::{self, DriverError};

/// Exit status: the driver could not be loaded (or is not a driver).
pub const EXIT_NO_DRIVER: i32 = 3;
/// Exit status: the driver loaded but reports no usable GPU.
pub const EXIT_NO_GPU: i32 = 4;
/// Exit status: the region could not be created.
pub const EXIT_REGION: i32 = 5;

/// Why the host cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No driver.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// `cuInit` or `cuDeviceGetCount` is missing or failed.
    #[error("{0}{hint}", hint = no_gpu_hint(.0))]
    Call(#[from] CallError),
    /// Zero devices.
    #[error("the CUDA driver sees no GPU")]
    NoDevice,
}

fn no_gpu_hint(error: &CallError) -> &'static str {
    match error {
        CallError::Failed {
            error: CuError::NO_DEVICE,
            ..
        } => " (no CUDA-capable GPU)",
        _ => "",
    }
}

impl CheckError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CheckError::Driver(_) | CheckError::Call(CallError::Missing(_)) => EXIT_NO_DRIVER,
            CheckError::Call(CallError::Failed { .. }) | CheckError::NoDevice => EXIT_NO_GPU,
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverInfo {
    /// `cuDeviceGetCount`.
    pub devices: i32,
    /// `cuDriverGetVersion` (0 when the driver lacks it or it fails).
    pub version: i32,
}

/// The supervisor's start-up check: loads the driver at `path` as this process's driver
/// ([`driver::load`]), initialises it and counts the GPUs.
///
/// # Errors
///
/// A [`CheckError`]; [`CheckError::exit_code`] gives the exit status.
pub fn check(path: &Path) -> Result<DriverInfo, CheckError> {
    driver::load(path)?;
    result::init(0)?;
    let devices = result::device_count()?;
    if devices <= 0 {
        return Err(CheckError::NoDevice);
    }
    Ok(DriverInfo {
        devices,
        version: result::driver_version().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_function_is_no_driver_and_a_failed_one_no_gpu() {
        let no_gpu = CheckError::Call(CallError::Failed {
            function: "cuInit",
            error: CuError::NO_DEVICE,
        });
        assert_eq!(
            no_gpu.to_string(),
            "cuInit failed with CUDA_ERROR_NO_DEVICE(100) (no CUDA-capable GPU)"
        );
        assert_eq!(no_gpu.exit_code(), EXIT_NO_GPU);
        let missing = CheckError::Call(CallError::Missing("cuDeviceGetCount"));
        assert_eq!(
            missing.to_string(),
            "the CUDA driver lacks cuDeviceGetCount"
        );
        assert_eq!(missing.exit_code(), EXIT_NO_DRIVER);
        assert_eq!(CheckError::NoDevice.exit_code(), EXIT_NO_GPU);
    }
}
