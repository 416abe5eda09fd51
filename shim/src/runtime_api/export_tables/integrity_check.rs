//! `d4082055-bde6-704b-8d34-ba123c66e1f2`: the integrity check (3 words; size word 24).
//!
//! | slot | signature | what the shim does |
//! |---|---|---|
//! | 0 | size word | 24 |
//! | 1 | `(u32 version, u64 unix_seconds, u64 result[2])` | computed in the guest, see [`crate::runtime_api::integrity`] |
//! | 2 | unknown | [`unknown_slot!`](super::unknown_slot) |
//!
//! The inputs are what the application sees through the shim: the advertised driver version,
//! the guest pid and thread, the addresses of the tables handed out, and for each visible device
//! (`cuDeviceGetCount`/`cuDeviceGet` after CUDA_VISIBLE_DEVICES) its UUID and PCI ids from the
//! host.

use std::ffi::c_void;

use cuda_headers::{CUdevice, CUdevice_attribute, CUresult, CUuuid, CuError, CuResult};

use super::{slot, trace_arg, unknown_slot, ExportTable, Known};
use crate::forward::generated;
use crate::runtime_api::integrity::{compute, DeviceIds, Inputs};

/// The table.
pub static TABLE: ExportTable<3> = ExportTable([
    ExportTable::<3>::size_word(),
    integrity_check as *const c_void,
    unknown_slot!("integrity-check", 2),
]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: super::uuid("d4082055bde6704b8d34ba123c66e1f2"),
    name: "integrity-check",
    table: || TABLE.address(),
};

fn attribute(dev: CUdevice, attribute: CUdevice_attribute) -> CuResult<i32> {
    let mut value = 0;
    // SAFETY: `value` is valid for one write.
    unsafe { generated::cuDeviceGetAttribute(&mut value, attribute, dev) }?;
    Ok(value)
}

/// UUID and PCI ids of every visible device, in ordinal order.
fn devices() -> CuResult<Vec<DeviceIds>> {
    let mut count = 0;
    // SAFETY: `count` is valid for one write.
    unsafe { crate::handlers::devices::cuDeviceGetCount(&mut count) }?;
    (0..count)
        .map(|ordinal| {
            let mut dev: CUdevice = 0;
            let mut uuid = CUuuid { bytes: [0; 16] };
            // SAFETY: both out-pointers are valid for one write.
            unsafe {
                crate::handlers::devices::cuDeviceGet(&mut dev, ordinal)?;
                generated::cuDeviceGetUuid_v2(&mut uuid, dev)?;
            }
            Ok(DeviceIds {
                uuid: uuid.bytes.map(|b| b as u8),
                pci_domain: attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
                pci_bus: attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
                pci_device: attribute(dev, CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
            })
        })
        .collect()
}

/// The inputs other than devices, for this call.
pub fn inputs(version: u32, unix_seconds: u64, driver_version: i32) -> Inputs {
    // SAFETY: pthread_self has no preconditions.
    let thread = unsafe { libc::pthread_self() } as u32;
    Inputs {
        driver_version: driver_version as u32,
        version,
        pid: std::process::id(),
        thread,
        cudart_table: super::cudart::TABLE.address() as u64,
        integrity_table: TABLE.address() as u64,
        function: TABLE.0[1] as u64,
        unix_seconds,
    }
}

/// Slot 1.
extern "system" fn integrity_check(
    version: u32,
    unix_seconds: u64,
    result: *mut [u64; 2],
) -> CUresult {
    slot(
        "integrity-check[1]",
        |out| {
            trace_arg(out, "version", &version);
            trace_arg(out, "unix_seconds", &unix_seconds);
            trace_arg(out, "result", &result);
        },
        || {
            if result.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            let driver = crate::runtime_api::driver_version::advertised_version()?;
            let value = compute(&inputs(version, unix_seconds, driver), &devices()?);
            // SAFETY: non-NULL, valid for one write of two u64s (runtime contract).
            unsafe { result.write(value) };
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_name_the_tables_handed_out() {
        let i = inputs(13002, 99, 13000);
        assert_eq!(i.cudart_table, super::super::cudart::TABLE.address() as u64);
        assert_eq!(i.integrity_table, TABLE.address() as u64);
        assert_eq!(i.function, integrity_check as *const () as usize as u64);
        assert_eq!(i.pid, std::process::id());
        assert_eq!(
            integrity_check(13002, 0, std::ptr::null_mut()),
            CUresult::CUDA_ERROR_INVALID_VALUE
        );
    }
}
