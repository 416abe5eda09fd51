//! Profiler control. Start and stop are forwarded (the host answers success when its driver
//! lacks them); `cuProfilerInitialize` names guest files for the profiler's configuration and
//! output, which a profiler on the host could not use: `CUDA_ERROR_NOT_SUPPORTED`. Host half:
//! `host/src/dispatch/handlers/profiler.rs`.
#![allow(non_snake_case)]

use std::ffi::c_char;

use cuda_headers::supplement::CUoutput_mode;
use cuda_headers::*;

use crate::forward::call_with;
use crate::log::{log, Level};

/// Starts profiling on the host.
///
/// # Safety
/// Always safe.
///
/// # Errors
/// The host's result.
pub unsafe fn cuProfilerStart() -> CuResult {
    call_with(
        shim_macros::cuda_call_id!(cuProfilerStart),
        |_| {},
        |_| Ok(()),
    )
}

/// Stops profiling on the host.
///
/// # Safety
/// Always safe.
///
/// # Errors
/// The host's result.
pub unsafe fn cuProfilerStop() -> CuResult {
    call_with(
        shim_macros::cuda_call_id!(cuProfilerStop),
        |_| {},
        |_| Ok(()),
    )
}

/// Not supported: its files are guest paths.
///
/// # Safety
/// Always safe: nothing is read.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED`.
pub unsafe fn cuProfilerInitialize(
    _configFile: *const c_char,
    _outputFile: *const c_char,
    _outputMode: CUoutput_mode,
) -> CuResult {
    log!(
        Level::Warn,
        "cuProfilerInitialize: profiler files are guest paths the host cannot use"
    );
    Err(CuError::NOT_SUPPORTED)
}
