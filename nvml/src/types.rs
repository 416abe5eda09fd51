//! The NVML ABI this facade implements, written by hand from the public NVML API reference
//! (`nvml.h`): return codes, buffer sizes and the few structs the answered calls fill.

use std::ffi::{c_char, CStr};

/// `nvmlReturn_t` (a C enum: 32 bits).
pub type NvmlReturn = u32;

/// `NVML_SUCCESS`.
pub const SUCCESS: NvmlReturn = 0;
/// `NVML_ERROR_UNINITIALIZED`: no successful `nvmlInit*` is outstanding.
pub const ERROR_UNINITIALIZED: NvmlReturn = 1;
/// `NVML_ERROR_INVALID_ARGUMENT`.
pub const ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
/// `NVML_ERROR_NOT_SUPPORTED`.
pub const ERROR_NOT_SUPPORTED: NvmlReturn = 3;
/// `NVML_ERROR_NOT_FOUND`.
pub const ERROR_NOT_FOUND: NvmlReturn = 6;
/// `NVML_ERROR_INSUFFICIENT_SIZE`.
pub const ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
/// `NVML_ERROR_DRIVER_NOT_LOADED`: no `libcuda.so.1`, or the vgpu host is unreachable.
pub const ERROR_DRIVER_NOT_LOADED: NvmlReturn = 9;
/// `NVML_ERROR_GPU_IS_LOST`: the vgpu host went away.
pub const ERROR_GPU_IS_LOST: NvmlReturn = 15;
/// `NVML_ERROR_MEMORY`.
pub const ERROR_MEMORY: NvmlReturn = 20;
/// `NVML_ERROR_ARGUMENT_VERSION_MISMATCH`: a versioned struct with an unknown version.
pub const ERROR_ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;
/// `NVML_ERROR_UNKNOWN`.
pub const ERROR_UNKNOWN: NvmlReturn = 999;

/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`: a buffer this size always holds a UUID.
pub const UUID_BUFFER_SIZE: usize = 96;
/// `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`.
pub const DRIVER_VERSION_BUFFER_SIZE: usize = 80;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE`.
pub const PCI_BUS_ID_BUFFER_SIZE: usize = 32;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE` (the legacy field).
pub const PCI_BUS_ID_BUFFER_V2_SIZE: usize = 16;

/// `nvmlMemory_t`: bytes of device memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Installed memory.
    pub total: u64,
    /// Unallocated memory.
    pub free: u64,
    /// Allocated memory.
    pub used: u64,
}

/// `nvmlMemory_v2_t`, for `nvmlDeviceGetMemoryInfo_v2`; the caller sets `version` to
/// [`MEMORY_V2_VERSION`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryV2 {
    /// `nvmlMemory_v2`.
    pub version: u32,
    /// Installed memory.
    pub total: u64,
    /// Memory the driver reserves for itself.
    pub reserved: u64,
    /// Unallocated memory.
    pub free: u64,
    /// Allocated memory, without `reserved`.
    pub used: u64,
}

/// `NVML_STRUCT_VERSION(Memory, 2)`: the struct's size with the version in the top byte.
pub const MEMORY_V2_VERSION: u32 = std::mem::size_of::<MemoryV2>() as u32 | (2 << 24);

/// `nvmlPciInfo_t` as `nvmlDeviceGetPciInfo_v2`/`_v3` fill it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciInfo {
    /// `domain:bus:device.function` with a 4-digit domain, NUL-terminated.
    pub bus_id_legacy: [c_char; PCI_BUS_ID_BUFFER_V2_SIZE],
    /// PCI domain.
    pub domain: u32,
    /// Bus.
    pub bus: u32,
    /// Device on the bus.
    pub device: u32,
    /// `(device id << 16) | vendor id`.
    pub pci_device_id: u32,
    /// `(subsystem device id << 16) | subsystem vendor id`.
    pub pci_sub_system_id: u32,
    /// `domain:bus:device.function` with an 8-digit domain, NUL-terminated.
    pub bus_id: [c_char; PCI_BUS_ID_BUFFER_SIZE],
}

/// `nvmlPciInfo_t` as the unversioned, original `nvmlDeviceGetPciInfo` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciInfoV1 {
    /// `domain:bus:device.function` with a 4-digit domain, NUL-terminated.
    pub bus_id: [c_char; PCI_BUS_ID_BUFFER_V2_SIZE],
    /// PCI domain.
    pub domain: u32,
    /// Bus.
    pub bus: u32,
    /// Device on the bus.
    pub device: u32,
    /// `(device id << 16) | vendor id`.
    pub pci_device_id: u32,
    /// `(subsystem device id << 16) | subsystem vendor id`.
    pub pci_sub_system_id: u32,
    /// Reserved, zero.
    pub reserved: [u32; 4],
}

const _: () = {
    assert!(std::mem::size_of::<Memory>() == 24);
    assert!(std::mem::size_of::<MemoryV2>() == 40);
    assert!(std::mem::offset_of!(MemoryV2, total) == 8);
    assert!(MEMORY_V2_VERSION == 0x0200_0028);
    assert!(std::mem::size_of::<PciInfo>() == 68);
    assert!(std::mem::offset_of!(PciInfo, domain) == 16);
    assert!(std::mem::offset_of!(PciInfo, bus_id) == 36);
    assert!(std::mem::size_of::<PciInfoV1>() == 52);
    assert!(std::mem::size_of::<NvmlReturn>() == 4);
};

/// `nvmlErrorString`'s text for `code` (NVML's wording; unknown codes get the text of
/// `NVML_ERROR_UNKNOWN`).
pub fn error_string(code: NvmlReturn) -> &'static CStr {
    match code {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt request issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires restart",
        17 => c"The operating system has blocked the request.",
        18 => c"RM has detected an NVML/RM version mismatch.",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        22 => c"The requested vgpu operation is not available on target device, because ECC is enabled",
        23 => c"Ran out of critical resources, other than memory",
        24 => c"The requested frequency is not supported",
        25 => c"Argument version mismatch",
        26 => c"The requested functionality has been deprecated",
        27 => c"The system is not ready for the request",
        28 => c"The GPU is not found",
        29 => c"The operation is in an invalid state",
        _ => c"Unknown Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_strings_cover_the_codes_we_return() {
        for code in [
            SUCCESS,
            ERROR_UNINITIALIZED,
            ERROR_INVALID_ARGUMENT,
            ERROR_NOT_SUPPORTED,
            ERROR_NOT_FOUND,
            ERROR_INSUFFICIENT_SIZE,
            ERROR_DRIVER_NOT_LOADED,
            ERROR_GPU_IS_LOST,
            ERROR_MEMORY,
            ERROR_ARGUMENT_VERSION_MISMATCH,
        ] {
            assert_ne!(error_string(code), c"Unknown Error", "code {code}");
        }
        assert_eq!(error_string(ERROR_UNKNOWN), c"Unknown Error");
        assert_eq!(error_string(12345), c"Unknown Error");
    }
}

/// `NVML_VALUE_NOT_AVAILABLE` for 32-bit fields (the instance ids of a GPU without MIG).
pub const VALUE_NOT_AVAILABLE_U32: u32 = u32::MAX;

/// `nvmlProcessInfo_v1_t`, for `nvmlDeviceGetComputeRunningProcesses`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessInfoV1 {
    /// Process id.
    pub pid: u32,
    /// Device memory the process holds, bytes.
    pub used_gpu_memory: u64,
}

/// `nvmlProcessInfo_t` (= `nvmlProcessInfo_v2_t`), for `nvmlDeviceGetComputeRunningProcesses_v2`
/// and `_v3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Device memory the process holds, bytes.
    pub used_gpu_memory: u64,
    /// MIG GPU instance ([`VALUE_NOT_AVAILABLE_U32`] without MIG).
    pub gpu_instance_id: u32,
    /// MIG compute instance ([`VALUE_NOT_AVAILABLE_U32`] without MIG).
    pub compute_instance_id: u32,
}

const _: () = assert!(std::mem::size_of::<ProcessInfoV1>() == 16);
const _: () = assert!(std::mem::size_of::<ProcessInfo>() == 24);
