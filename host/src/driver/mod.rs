//! The real CUDA driver, in three layers as cudarc has them: [`Driver`] loads the library (with
//! libloading) and refuses what is not a driver; [`real`] resolves every function by name to its
//! signature-list type; [`result`] gives the calls the host makes itself typed results. One driver
//! is loaded per process ([`load`]): the supervisor's for its start-up check, a worker's for its
//! client.

pub mod real;
pub mod result;

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The default driver: whatever `libcuda.so.1` the system's loader finds.
pub const DEFAULT_DRIVER: &str = "libcuda.so.1";

/// Why the driver could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// dlopen failed.
    #[error("cannot load the CUDA driver {path}: {source}")]
    Load {
        /// What was opened.
        path: PathBuf,
        /// The loader's message.
        source: libloading::Error,
    },
    /// The library loaded but is not a CUDA driver.
    #[error("{path} is not a CUDA driver: it lacks {symbol}")]
    NotADriver {
        /// What was opened.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// The file loaded is our own shim (it exports [`protocol::shim_marker::SYMBOL`]): forwarding
    /// to ourselves would loop.
    #[error(
        "{path} is the vgpu shim (libvgpu-cuda.so), not a CUDA driver: give --driver the real libcuda.so.1 of the NVIDIA driver"
    )]
    IsShim {
        /// What was opened.
        path: PathBuf,
    },
}

/// A loaded real driver library.
pub struct Driver {
    lib: libloading::Library,
    path: PathBuf,
}

impl Driver {
    /// Loads the driver at `path` (a file name is searched the loader's usual way).
    ///
    /// # Errors
    ///
    /// [`DriverError`] when the library is missing, is not a CUDA driver, or is the shim.
    pub fn open(path: &Path) -> Result<Self, DriverError> {
        // SAFETY: loading a shared library runs its initialisers; the real libcuda's
        // initialisers are benign (it initialises on cuInit).
        let lib =
            unsafe { libloading::Library::new(path) }.map_err(|source| DriverError::Load {
                path: path.to_owned(),
                source,
            })?;
        let driver = Self {
            lib,
            path: path.to_owned(),
        };
        if driver.symbol(protocol::shim_marker::SYMBOL_C).is_some() {
            return Err(DriverError::IsShim {
                path: path.to_owned(),
            });
        }
        if driver.symbol(c"cuInit").is_none() {
            return Err(DriverError::NotADriver {
                path: path.to_owned(),
                symbol: "cuInit",
            });
        }
        Ok(driver)
    }

    /// The path the driver was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Address of an exported symbol, if the driver has it.
    pub fn symbol(&self, name: &CStr) -> Option<*const c_void> {
        // SAFETY: we only read the symbol's address; the caller casts it to the type the
        // signature list gives for that name before calling it.
        let sym = unsafe { self.lib.get::<*const c_void>(name.to_bytes_with_nul()) }.ok()?;
        let addr = *sym;
        (!addr.is_null()).then_some(addr)
    }
}

/// The driver of this process, once [`load`] loaded it.
static LOADED: OnceLock<Driver> = OnceLock::new();

/// Loads the driver at `path` as this process's driver, which [`real`] and [`result`] call; a
/// process loads one driver, so a later call returns the first one, whatever its path.
///
/// # Errors
///
/// [`DriverError`] when the library is missing, is not a CUDA driver, or is the shim.
pub fn load(path: &Path) -> Result<&'static Driver, DriverError> {
    if let Some(driver) = LOADED.get() {
        return Ok(driver);
    }
    let driver = Driver::open(path)?;
    Ok(LOADED.get_or_init(|| driver))
}

/// This process's driver, once [`load`] loaded it.
pub fn loaded() -> Option<&'static Driver> {
    LOADED.get()
}
