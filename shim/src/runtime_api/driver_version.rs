//! `cuDriverGetVersion`: what the shim advertises.
//!
//! The answer is `min(host driver's version, PROBED_DRIVER_VERSION)`: the host's real driver says
//! what the GPU side can do, and the probed `cuGetProcAddress` table (13000 today) says what the
//! shim can hand out. cudart checks `driver >= its own version` (cudart 12.x needs ≥ 12x00,
//! cudart 13 needs ≥ 13000): advertising more than the host has would make a newer runtime start
//! and then fail call by call; advertising more than the table knows would hand a runtime symbols
//! of a version the shim was never probed for. The host's answer is asked once and kept.

use std::sync::OnceLock;

use cuda_headers::proc_address::PROBED_DRIVER_VERSION;
use cuda_headers::{CuError, CuResult};

use crate::forward::generated;

/// The version advertised, given the host's.
pub fn advertised(host: i32) -> i32 {
    host.min(PROBED_DRIVER_VERSION)
}

/// The advertised version, asking the host on first use.
///
/// # Errors
/// The host's failure (`CUDA_ERROR_NOT_INITIALIZED` without a host).
pub fn advertised_version() -> CuResult<i32> {
    static HOST: OnceLock<i32> = OnceLock::new();
    if let Some(&v) = HOST.get() {
        return Ok(advertised(v));
    }
    let mut host = 0;
    // SAFETY: `host` is valid for one write.
    unsafe { generated::cuDriverGetVersion(&mut host) }?;
    Ok(advertised(*HOST.get_or_init(|| host)))
}

/// `cuDriverGetVersion`.
///
/// # Safety
/// `driverVersion` is NULL or valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL; the host's failure.
pub unsafe fn cuDriverGetVersion(driverVersion: *mut i32) -> CuResult {
    if driverVersion.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let version = advertised_version()?;
    // SAFETY: non-NULL, valid for one write (contract).
    unsafe { driverVersion.write(version) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_host_or_the_table() {
        assert_eq!(advertised(12080), 12080);
        assert_eq!(advertised(13000), 13000);
        assert_eq!(advertised(13020), PROBED_DRIVER_VERSION);
    }
}
