//! The exported NVML functions this facade answers. Each runs its body inside `catch_unwind`
//! ([`guarded`]): a panic becomes `NVML_ERROR_UNKNOWN` and one log line.
#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use protocol::special::nvml::BusId;

use crate::format::{copy_c_string, pci_info, pci_info_v1};
use crate::log::{log, Level};
use crate::state::{self, Handle};
use crate::types::*;

/// Runs `body`, mapping `Ok` to `NVML_SUCCESS` and a panic to `NVML_ERROR_UNKNOWN`.
fn guarded(name: &str, body: impl FnOnce() -> Result<(), NvmlReturn>) -> NvmlReturn {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            log!(
                Level::Error,
                "{name} panicked; answering NVML_ERROR_UNKNOWN"
            );
            ERROR_UNKNOWN
        }
    }
}

/// Writes `value` through an out-pointer the caller passed.
///
/// # Safety
/// `out` is NULL or valid for one write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), NvmlReturn> {
    if out.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, and valid per the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// A C string argument.
///
/// # Safety
/// `text` is NULL or NUL-terminated.
unsafe fn text_arg<'a>(text: *const c_char) -> Result<&'a str, NvmlReturn> {
    if text.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(text) }
        .to_str()
        .map_err(|_| ERROR_INVALID_ARGUMENT)
}

/// `nvmlInit_v2`: loads `libcuda.so.1` and enumerates the visible devices (first success only).
#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    guarded("nvmlInit_v2", state::init)
}

/// `nvmlInit` (the original entry point): as [`nvmlInit_v2`].
#[no_mangle]
pub extern "C" fn nvmlInit() -> NvmlReturn {
    guarded("nvmlInit", state::init)
}

/// `nvmlInitWithFlags`: as [`nvmlInit_v2`]; the flags (no-GPU / no-attach) change nothing here.
#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    guarded("nvmlInitWithFlags", state::init)
}

/// `nvmlShutdown`.
#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    guarded("nvmlShutdown", state::shutdown)
}

/// `nvmlErrorString`: a static text for every code.
#[no_mangle]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    error_string(result).as_ptr()
}

/// `nvmlSystemGetDriverVersion`: the host kernel driver's version (`580.159.04`), or
/// `NVML_ERROR_NOT_SUPPORTED` when the host cannot tell it.
///
/// # Safety
/// `version` is valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guarded("nvmlSystemGetDriverVersion", || {
        state::initialised()?;
        let v = state::driver_version().ok_or(ERROR_NOT_SUPPORTED)?;
        // SAFETY: per this function's contract.
        unsafe { copy_c_string(&v.text, version, length) }
    })
}

/// `nvmlSystemGetNVMLVersion`: `<CUDA major>.<driver version>`, as NVML spells its own version.
///
/// # Safety
/// `version` is valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guarded("nvmlSystemGetNVMLVersion", || {
        let (driver, _) = state::initialised()?;
        let v = state::driver_version().ok_or(ERROR_NOT_SUPPORTED)?;
        let text = format!("{}.{}", driver.cuda_version()? / 1000, v.text);
        // SAFETY: per this function's contract.
        unsafe { copy_c_string(&text, version, length) }
    })
}

/// `nvmlSystemGetCudaDriverVersion`: `cuDriverGetVersion` of the host driver.
///
/// # Safety
/// `version` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> NvmlReturn {
    guarded("nvmlSystemGetCudaDriverVersion", || {
        let (driver, _) = state::initialised()?;
        // SAFETY: per this function's contract.
        unsafe { put(version, driver.cuda_version()?) }
    })
}

/// `nvmlSystemGetCudaDriverVersion_v2`: as the unversioned one.
///
/// # Safety
/// `version` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> NvmlReturn {
    // SAFETY: same contract.
    unsafe { nvmlSystemGetCudaDriverVersion(version) }
}

/// `nvmlDeviceGetCount_v2`: the devices this process sees (after `CUDA_VISIBLE_DEVICES`).
///
/// # Safety
/// `count` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    guarded("nvmlDeviceGetCount_v2", || {
        let (_, devices) = state::initialised()?;
        // SAFETY: per this function's contract.
        unsafe { put(count, devices.len() as c_uint) }
    })
}

/// `nvmlDeviceGetCount`: as [`nvmlDeviceGetCount_v2`].
///
/// # Safety
/// `count` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> NvmlReturn {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetCount_v2(count) }
}

/// `nvmlDeviceGetHandleByIndex_v2`.
///
/// # Safety
/// `device` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut Handle,
) -> NvmlReturn {
    guarded("nvmlDeviceGetHandleByIndex_v2", || {
        let (_, devices) = state::initialised()?;
        let found = devices.get(index as usize).ok_or(ERROR_INVALID_ARGUMENT)?;
        // SAFETY: per this function's contract.
        unsafe { put(device, std::ptr::from_ref(found)) }
    })
}

/// `nvmlDeviceGetHandleByIndex`: as [`nvmlDeviceGetHandleByIndex_v2`].
///
/// # Safety
/// `device` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut Handle,
) -> NvmlReturn {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetHandleByIndex_v2(index, device) }
}

/// `nvmlDeviceGetHandleByUUID`: the whole `GPU-…` text, any case.
///
/// # Safety
/// `uuid` is NUL-terminated; `device` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    guarded("nvmlDeviceGetHandleByUUID", || {
        let (_, devices) = state::initialised()?;
        // SAFETY: per this function's contract.
        let wanted = unsafe { text_arg(uuid) }?.trim();
        let found = devices
            .iter()
            .find(|d| d.info.uuid.eq_ignore_ascii_case(wanted))
            .ok_or(ERROR_NOT_FOUND)?;
        // SAFETY: per this function's contract.
        unsafe { put(device, std::ptr::from_ref(found)) }
    })
}

/// `nvmlDeviceGetHandleByPciBusId_v2`: `[domain:]bus:device[.function]`, any case.
///
/// # Safety
/// `pci_bus_id` is NUL-terminated; `device` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    pci_bus_id: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    guarded("nvmlDeviceGetHandleByPciBusId_v2", || {
        let (_, devices) = state::initialised()?;
        // SAFETY: per this function's contract.
        let wanted =
            BusId::parse(unsafe { text_arg(pci_bus_id) }?).ok_or(ERROR_INVALID_ARGUMENT)?;
        let found = devices
            .iter()
            .find(|d| d.info.bus_id == wanted)
            .ok_or(ERROR_NOT_FOUND)?;
        // SAFETY: per this function's contract.
        unsafe { put(device, std::ptr::from_ref(found)) }
    })
}

/// `nvmlDeviceGetHandleByPciBusId`: as [`nvmlDeviceGetHandleByPciBusId_v2`].
///
/// # Safety
/// As [`nvmlDeviceGetHandleByPciBusId_v2`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    pci_bus_id: *const c_char,
    device: *mut Handle,
) -> NvmlReturn {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id, device) }
}

/// `nvmlDeviceGetName`.
///
/// # Safety
/// `name` is valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: Handle,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guarded("nvmlDeviceGetName", || {
        let d = state::device(device)?;
        // SAFETY: per this function's contract.
        unsafe { copy_c_string(&d.info.name, name, length) }
    })
}

/// `nvmlDeviceGetUUID`: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
///
/// # Safety
/// `uuid` is valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: Handle,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guarded("nvmlDeviceGetUUID", || {
        let d = state::device(device)?;
        // SAFETY: per this function's contract.
        unsafe { copy_c_string(&d.info.uuid, uuid, length) }
    })
}

/// `nvmlDeviceGetIndex`: the CUDA ordinal among the visible devices.
///
/// # Safety
/// `index` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: Handle, index: *mut c_uint) -> NvmlReturn {
    guarded("nvmlDeviceGetIndex", || {
        let d = state::device(device)?;
        // SAFETY: per this function's contract.
        unsafe { put(index, d.index) }
    })
}

/// `nvmlDeviceGetPciInfo_v3`: the bus id from the driver; device and subsystem ids from the host
/// (zero when the host cannot read them).
///
/// # Safety
/// `pci` is valid for one write of the v2/v3 `nvmlPciInfo_t` (68 bytes).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: Handle, pci: *mut PciInfo) -> NvmlReturn {
    guarded("nvmlDeviceGetPciInfo_v3", || {
        let d = state::device(device)?;
        if pci.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let info = pci_info(&d.info.bus_id, state::pci_facts(d).ids);
        // SAFETY: per this function's contract.
        unsafe { put(pci, info) }
    })
}

/// `nvmlDeviceGetPciInfo_v2`: the same struct as v3.
///
/// # Safety
/// As [`nvmlDeviceGetPciInfo_v3`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(device: Handle, pci: *mut PciInfo) -> NvmlReturn {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetPciInfo_v3(device, pci) }
}

/// `nvmlDeviceGetPciInfo`, the original: the 52-byte layout with a 16-byte bus id.
///
/// # Safety
/// `pci` is valid for one write of [`PciInfoV1`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(device: Handle, pci: *mut PciInfoV1) -> NvmlReturn {
    guarded("nvmlDeviceGetPciInfo", || {
        let d = state::device(device)?;
        if pci.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let info = pci_info_v1(&d.info.bus_id, state::pci_facts(d).ids);
        // SAFETY: per this function's contract.
        unsafe { put(pci, info) }
    })
}

/// The device's memory: the host's real NVML through the shim (`special::NVML_MEMORY`), which
/// counts the driver's reservation in the total as native NVML does; else `cuMemGetInfo_v2` in
/// the device's primary context (see [`crate::cuda::Driver::memory`]) with `used = total - free`
/// and nothing reserved.
fn device_memory(d: &state::Device) -> Result<protocol::special::nvml::MemoryFacts, NvmlReturn> {
    if let Ok(m) = crate::host::fetch_memory(&d.info.bus_id.sysfs_name()) {
        return Ok(m);
    }
    let (driver, _) = state::initialised()?;
    let (free, total) = driver.memory(d.info.handle)?;
    Ok(protocol::special::nvml::MemoryFacts {
        total,
        reserved: 0,
        free,
        used: total.saturating_sub(free),
    })
}

/// `nvmlDeviceGetMemoryInfo`: [`device_memory`] (v1 counts the reservation as used).
///
/// # Safety
/// `memory` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: Handle,
    memory: *mut Memory,
) -> NvmlReturn {
    guarded("nvmlDeviceGetMemoryInfo", || {
        let d = state::device(device)?;
        if memory.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let m = device_memory(d)?;
        let value = Memory {
            total: m.total,
            free: m.free,
            used: m.total.saturating_sub(m.free),
        };
        // SAFETY: per this function's contract.
        unsafe { put(memory, value) }
    })
}

/// `nvmlDeviceGetMemoryInfo_v2`: [`device_memory`] in the versioned struct (`reserved` is 0 when
/// the answer came from CUDA).
///
/// # Safety
/// `memory` is valid for reads and writes of [`MemoryV2`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: Handle,
    memory: *mut MemoryV2,
) -> NvmlReturn {
    guarded("nvmlDeviceGetMemoryInfo_v2", || {
        let d = state::device(device)?;
        if memory.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-NULL and valid per this function's contract; only the version is read.
        let version = unsafe { std::ptr::addr_of!((*memory).version).read() };
        if version != MEMORY_V2_VERSION {
            return Err(ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let m = device_memory(d)?;
        let value = MemoryV2 {
            version,
            total: m.total,
            reserved: m.reserved,
            free: m.free,
            used: m.used,
        };
        // SAFETY: per this function's contract.
        unsafe { put(memory, value) }
    })
}

/// `nvmlDeviceGetCudaComputeCapability`.
///
/// # Safety
/// `major` and `minor` are valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: Handle,
    major: *mut c_int,
    minor: *mut c_int,
) -> NvmlReturn {
    guarded("nvmlDeviceGetCudaComputeCapability", || {
        let d = state::device(device)?;
        if major.is_null() || minor.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let (ma, mi) = d.info.compute_capability;
        // SAFETY: per this function's contract.
        unsafe {
            put(major, ma)?;
            put(minor, mi)
        }
    })
}

/// `nvmlP2PCapsIndex_t` values up to `NVML_P2P_CAPS_INDEX_PCI` (4); `UNKNOWN` (5) and above
/// are refused.
const P2P_CAPS_INDEX_LAST: c_uint = 4;
/// `NVML_P2P_STATUS_OK`.
const P2P_STATUS_OK: c_uint = 0;
/// `NVML_P2P_STATUS_NOT_SUPPORTED`.
const P2P_STATUS_NOT_SUPPORTED: c_uint = 5;

/// `nvmlDeviceGetP2PStatus`: whether two devices reach each other peer to peer. NCCL asks it
/// for every pair of devices (read and write) while it initialises, through a pointer it never
/// checks for NULL: without this export `torch.distributed`'s NCCL backend crashed in
/// `ncclCommInitRank` (issue 12). A device with itself answers `NVML_P2P_STATUS_OK`; two
/// devices answer `NVML_P2P_STATUS_NOT_SUPPORTED`, so NCCL moves data between a guest's devices
/// through host memory rather than assume peer paths the facade cannot see.
///
/// # Safety
/// `status` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetP2PStatus(
    device1: Handle,
    device2: Handle,
    index: c_uint,
    status: *mut c_uint,
) -> NvmlReturn {
    guarded("nvmlDeviceGetP2PStatus", || {
        let a = state::device(device1)?;
        let b = state::device(device2)?;
        if index > P2P_CAPS_INDEX_LAST {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let answer = if a.index == b.index {
            P2P_STATUS_OK
        } else {
            P2P_STATUS_NOT_SUPPORTED
        };
        // SAFETY: per this function's contract.
        unsafe { put(status, answer) }
    })
}

/// `nvmlDeviceGetArchitecture`: `nvmlDeviceArchitecture_t` from the compute capability.
///
/// # Safety
/// `arch` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(
    device: Handle,
    arch: *mut c_uint,
) -> NvmlReturn {
    guarded("nvmlDeviceGetArchitecture", || {
        let d = state::device(device)?;
        let value = architecture(d.info.compute_capability).ok_or(ERROR_NOT_SUPPORTED)?;
        // SAFETY: per this function's contract.
        unsafe { put(arch, value) }
    })
}

/// `nvmlDeviceArchitecture_t` for a compute capability (`NVML_DEVICE_ARCH_*`).
pub fn architecture((major, minor): (i32, i32)) -> Option<c_uint> {
    Some(match (major, minor) {
        (3, _) => 2,        // Kepler
        (5, _) => 3,        // Maxwell
        (6, _) => 4,        // Pascal
        (7, 0..=4) => 5,    // Volta
        (7, _) => 6,        // Turing
        (8, 9) => 8,        // Ada
        (8, _) => 7,        // Ampere
        (9, _) => 9,        // Hopper
        (10..=12, _) => 10, // Blackwell
        _ => return None,
    })
}

/// `nvmlDeviceGetMinorNumber`: the host's `/dev/nvidiaN` minor, or `NVML_ERROR_NOT_SUPPORTED`.
///
/// # Safety
/// `minor` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: Handle,
    minor: *mut c_uint,
) -> NvmlReturn {
    guarded("nvmlDeviceGetMinorNumber", || {
        let d = state::device(device)?;
        if minor.is_null() {
            return Err(ERROR_INVALID_ARGUMENT);
        }
        let value = state::pci_facts(d).minor.ok_or(ERROR_NOT_SUPPORTED)?;
        // SAFETY: per this function's contract.
        unsafe { put(minor, value) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_follows_compute_capability() {
        assert_eq!(architecture((9, 0)), Some(9));
        assert_eq!(architecture((8, 9)), Some(8));
        assert_eq!(architecture((8, 6)), Some(7));
        assert_eq!(architecture((7, 5)), Some(6));
        assert_eq!(architecture((7, 0)), Some(5));
        assert_eq!(architecture((12, 0)), Some(10));
        assert_eq!(architecture((2, 1)), None);
    }

    #[test]
    fn calls_before_init_are_refused_and_panics_are_contained() {
        let mut count = 7;
        // SAFETY: out-pointer to a live local.
        let r = unsafe { nvmlDeviceGetCount_v2(&mut count) };
        assert_eq!(r, ERROR_UNINITIALIZED);
        assert_eq!(count, 7);
        assert_eq!(nvmlShutdown(), ERROR_UNINITIALIZED);
        assert_eq!(guarded("test", || panic!("boom")), ERROR_UNKNOWN);
        let bogus = 0x10 as Handle;
        let mut index = 0;
        // SAFETY: out-pointer to a live local; the handle is only compared, never dereferenced.
        let r = unsafe { nvmlDeviceGetIndex(bogus, &mut index) };
        assert_eq!(r, ERROR_UNINITIALIZED);
        // SAFETY: returns a static string.
        let text = unsafe { CStr::from_ptr(nvmlErrorString(ERROR_NOT_SUPPORTED)) };
        assert_eq!(text, c"Not Supported");
    }
}
