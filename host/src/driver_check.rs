//! The supervisor's start-up check: is there a driver, and does it see a GPU?

use std::ffi::c_int;
use std::path::Path;

use crate::driver::{Driver, DriverError};

/// Exit status: the driver could not be loaded (or is not a driver).
pub const EXIT_NO_DRIVER: i32 = 3;
/// Exit status: the driver loaded but reports no usable GPU.
pub const EXIT_NO_GPU: i32 = 4;
/// Exit status: the region could not be created.
pub const EXIT_REGION: i32 = 5;

/// `CUDA_ERROR_NO_DEVICE`.
const CUDA_ERROR_NO_DEVICE: c_int = 100;

type CuInit = unsafe extern "C" fn(flags: u32) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(count: *mut c_int) -> c_int;
type CuDriverGetVersion = unsafe extern "C" fn(version: *mut c_int) -> c_int;

/// Why the host cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No driver.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A required entry point is missing.
    #[error("the CUDA driver {path} lacks {symbol}")]
    Missing {
        /// Driver path.
        path: String,
        /// Missing symbol.
        symbol: &'static str,
    },
    /// `cuInit` failed.
    #[error("cuInit failed with CUDA error {0}{hint}", hint = if *.0 == CUDA_ERROR_NO_DEVICE { " (no CUDA-capable GPU)" } else { "" })]
    Init(c_int),
    /// `cuDeviceGetCount` failed.
    #[error("cuDeviceGetCount failed with CUDA error {0}")]
    Count(c_int),
    /// Zero devices.
    #[error("the CUDA driver sees no GPU")]
    NoDevice,
}

impl CheckError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CheckError::Driver(_) | CheckError::Missing { .. } => EXIT_NO_DRIVER,
            CheckError::Init(_) | CheckError::Count(_) | CheckError::NoDevice => EXIT_NO_GPU,
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverInfo {
    /// `cuDeviceGetCount`.
    pub devices: i32,
    /// `cuDriverGetVersion` (0 when the driver lacks it).
    pub version: i32,
}

/// Loads the driver at `path` and runs the real `cuInit(0)`; returns the loaded driver. The
/// library stays loaded as long as the returned value lives; a later `dlopen` of the same path
/// in this process gets the same, already initialised, library.
///
/// # Errors
///
/// [`CheckError::Driver`], [`CheckError::Missing`], [`CheckError::Init`].
pub fn open_and_init(path: &Path) -> Result<Driver, CheckError> {
    let driver = Driver::open(path)?;
    let init = driver.symbol(c"cuInit").ok_or(CheckError::Missing {
        path: path.display().to_string(),
        symbol: "cuInit",
    })?;
    // SAFETY: `cuInit` has the signature `CUresult cuInit(unsigned int Flags)` in cuda.h.
    let init: CuInit = unsafe { std::mem::transmute::<*const std::ffi::c_void, CuInit>(init) };
    // SAFETY: plain value argument; the driver stays loaded for the call.
    let rc = unsafe { init(0) };
    if rc != 0 {
        return Err(CheckError::Init(rc));
    }
    Ok(driver)
}

/// The supervisor's start-up check: loads the driver, initialises it and counts the GPUs.
///
/// # Errors
///
/// A [`CheckError`]; [`CheckError::exit_code`] gives the exit status.
pub fn check(path: &Path) -> Result<DriverInfo, CheckError> {
    let driver = open_and_init(path)?;
    let count = driver
        .symbol(c"cuDeviceGetCount")
        .ok_or(CheckError::Missing {
            path: path.display().to_string(),
            symbol: "cuDeviceGetCount",
        })?;
    // SAFETY: `cuDeviceGetCount` has the signature `CUresult cuDeviceGetCount(int *count)`.
    let count: CuDeviceGetCount =
        unsafe { std::mem::transmute::<*const std::ffi::c_void, CuDeviceGetCount>(count) };
    let mut devices: c_int = 0;
    // SAFETY: `devices` is a valid, writable int for the duration of the call.
    let rc = unsafe { count(&mut devices) };
    if rc != 0 {
        return Err(CheckError::Count(rc));
    }
    if devices <= 0 {
        return Err(CheckError::NoDevice);
    }
    let mut version: c_int = 0;
    if let Some(get) = driver.symbol(c"cuDriverGetVersion") {
        // SAFETY: `cuDriverGetVersion` has the signature `CUresult cuDriverGetVersion(int *)`.
        let get: CuDriverGetVersion =
            unsafe { std::mem::transmute::<*const std::ffi::c_void, CuDriverGetVersion>(get) };
        // SAFETY: `version` is a valid, writable int for the duration of the call.
        if unsafe { get(&mut version) } != 0 {
            version = 0;
        }
    }
    Ok(DriverInfo { devices, version })
}
