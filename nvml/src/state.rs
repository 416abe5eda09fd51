//! Library state: the `nvmlInit*`/`nvmlShutdown` count, the device table and the host's facts.
//!
//! Devices are enumerated at the first successful `nvmlInit*` and kept for the life of the
//! process, so a handle (`nvmlDevice_t`, the address of a table entry) stays valid across
//! shutdown and init, as NVML's do. A handle from the application is only ever compared with
//! the table's addresses, never dereferenced.

use std::sync::{Mutex, OnceLock, PoisonError};

use protocol::special::nvml::{DriverVersion, Facts, PciFacts};

use crate::cuda::{self, DeviceInfo, Driver};
use crate::host;
use crate::log::{log, Level};
use crate::types::{
    NvmlReturn, ERROR_DRIVER_NOT_LOADED, ERROR_INVALID_ARGUMENT, ERROR_UNINITIALIZED,
};

/// One device as handed out: its table index is its NVML index.
#[derive(Debug)]
pub struct Device {
    /// NVML index (= CUDA ordinal among the visible devices).
    pub index: u32,
    /// What the driver said.
    pub info: DeviceInfo,
}

/// `nvmlDevice_t`: a pointer the application only passes back.
pub type Handle = *const Device;

static INIT_COUNT: Mutex<u32> = Mutex::new(0);
static DEVICES: OnceLock<Box<[Device]>> = OnceLock::new();
static FACTS: OnceLock<Option<Facts>> = OnceLock::new();

/// `nvmlInit*`: opens the driver and enumerates devices on the first success, then counts.
///
/// # Errors
/// `NVML_ERROR_DRIVER_NOT_LOADED` without a usable `libcuda.so.1` or host; the driver's failure.
pub fn init() -> Result<(), NvmlReturn> {
    let mut count = INIT_COUNT.lock().unwrap_or_else(PoisonError::into_inner);
    if DEVICES.get().is_none() {
        let driver = cuda::driver().ok_or(ERROR_DRIVER_NOT_LOADED)?;
        let list = driver.enumerate().inspect_err(|code| {
            log!(
                Level::Error,
                "nvmlInit failed: the driver's device enumeration answered NVML error {code}"
            );
        })?;
        let table = list
            .into_iter()
            .enumerate()
            .map(|(i, info)| Device {
                index: i as u32,
                info,
            })
            .collect();
        // Under the lock: nobody else sets it.
        let _ = DEVICES.set(table);
    }
    *count += 1;
    Ok(())
}

/// `nvmlShutdown`.
///
/// # Errors
/// `NVML_ERROR_UNINITIALIZED` without an outstanding init.
pub fn shutdown() -> Result<(), NvmlReturn> {
    let mut count = INIT_COUNT.lock().unwrap_or_else(PoisonError::into_inner);
    if *count == 0 {
        return Err(ERROR_UNINITIALIZED);
    }
    *count -= 1;
    Ok(())
}

/// The driver and device table, for calls that need an outstanding init.
///
/// # Errors
/// `NVML_ERROR_UNINITIALIZED`.
pub fn initialised() -> Result<(&'static Driver, &'static [Device]), NvmlReturn> {
    if *INIT_COUNT.lock().unwrap_or_else(PoisonError::into_inner) == 0 {
        return Err(ERROR_UNINITIALIZED);
    }
    match (cuda::driver(), DEVICES.get()) {
        (Some(driver), Some(devices)) => Ok((driver, devices)),
        _ => Err(ERROR_UNINITIALIZED),
    }
}

/// The device behind `handle`.
///
/// # Errors
/// `NVML_ERROR_UNINITIALIZED`, or `NVML_ERROR_INVALID_ARGUMENT` for a handle not handed out.
pub fn device(handle: Handle) -> Result<&'static Device, NvmlReturn> {
    let (_, devices) = initialised()?;
    devices
        .iter()
        .find(|d| std::ptr::eq(*d, handle))
        .ok_or(ERROR_INVALID_ARGUMENT)
}

/// The host's facts, asked for once per process (on first need) and then kept; `None` when the
/// host cannot answer (one log line).
fn facts() -> Option<&'static Facts> {
    FACTS
        .get_or_init(|| {
            let bus_ids = DEVICES
                .get()
                .map(|d| {
                    d.iter()
                        .map(|d| crate::format::bus_id_legacy_text(&d.info.bus_id))
                        .collect()
                })
                .unwrap_or_default();
            host::fetch_facts(bus_ids)
                .inspect_err(|e| {
                    log!(
                        Level::Warn,
                        "driver version, PCI ids and minor numbers are unavailable: {e}"
                    );
                })
                .ok()
        })
        .as_ref()
}

/// The host kernel driver's version, if the host knows it.
pub fn driver_version() -> Option<&'static DriverVersion> {
    facts()?.driver_version.as_ref()
}

/// The host's PCI facts about `device`.
pub fn pci_facts(device: &Device) -> PciFacts {
    facts()
        .and_then(|f| f.devices.get(device.index as usize).copied())
        .unwrap_or_default()
}
