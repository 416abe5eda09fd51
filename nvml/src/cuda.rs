//! The CUDA driver API of `libcuda.so.1`, opened with `dlopen` at the first `nvmlInit*`: in a
//! vgpu guest the preloaded shim (it has that soname), so values are the host driver's and
//! `CUDA_VISIBLE_DEVICES` is applied by the shim exactly as for CUDA programs.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use protocol::special::nvml::BusId;

use crate::format::uuid_string;
use crate::log::{log, Level};
use crate::types::{
    NvmlReturn, ERROR_DRIVER_NOT_LOADED, ERROR_GPU_IS_LOST, ERROR_INVALID_ARGUMENT, ERROR_MEMORY,
    ERROR_UNKNOWN,
};

/// `CUresult`.
type CuResult = c_int;
/// `CUdevice`.
pub type CuDevice = c_int;
type CuContext = *mut c_void;

const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_NO_DEVICE: CuResult = 100;
const ATTR_PCI_BUS_ID: c_int = 33;
const ATTR_PCI_DEVICE_ID: c_int = 34;
const ATTR_PCI_DOMAIN_ID: c_int = 50;
const ATTR_CC_MAJOR: c_int = 75;
const ATTR_CC_MINOR: c_int = 76;

/// The driver functions the facade uses, resolved once.
pub struct Driver {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    device_get_uuid: unsafe extern "C" fn(*mut [u8; 16], CuDevice) -> CuResult,
    device_total_mem: unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult,
    device_get_pci_bus_id: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    primary_ctx_release: unsafe extern "C" fn(CuDevice) -> CuResult,
    ctx_push_current: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_pop_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult,
}

/// One device the guest sees, as enumerated at the first successful `nvmlInit*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The driver's handle (the shim answers the host's).
    pub handle: CuDevice,
    /// Product name.
    pub name: String,
    /// `GPU-…` UUID text.
    pub uuid: String,
    /// PCI address, from `cuDeviceGetPCIBusId` or else the PCI attributes.
    pub bus_id: BusId,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// `cuDeviceTotalMem_v2`.
    pub total_memory: u64,
}

/// Maps a failed driver call to the NVML code the caller gets.
pub fn nvml_code(r: CuResult) -> NvmlReturn {
    match r {
        1 => ERROR_INVALID_ARGUMENT,
        2 => ERROR_MEMORY,
        3 | 4 => ERROR_DRIVER_NOT_LOADED,
        46 => ERROR_GPU_IS_LOST,
        _ => ERROR_UNKNOWN,
    }
}

fn check(r: CuResult) -> Result<(), NvmlReturn> {
    if r == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(nvml_code(r))
    }
}

/// The driver, opened on first use; `None` (and one log line) when there is none.
pub fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER.get_or_init(open).as_ref()
}

fn open() -> Option<Driver> {
    // SAFETY: a NUL-terminated name; loading a library has no other precondition.
    let lib = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if lib.is_null() {
        log!(
            Level::Error,
            "NVML calls return NVML_ERROR_DRIVER_NOT_LOADED: cannot load libcuda.so.1 (preload the vgpu shim)"
        );
        return None;
    }
    let sym = |name: &CStr| -> Option<*mut c_void> {
        // SAFETY: `lib` is a live handle (never closed) and `name` NUL-terminated.
        let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
        if p.is_null() {
            log!(
                Level::Error,
                "NVML calls return NVML_ERROR_DRIVER_NOT_LOADED: libcuda.so.1 lacks {}",
                name.to_string_lossy()
            );
            None
        } else {
            Some(p)
        }
    };
    macro_rules! resolve {
        ($name:literal) => {
            // SAFETY: the driver API declares this symbol with the field's signature (cuda.h).
            unsafe { fn_pointer(sym($name)?) }
        };
    }
    Some(Driver {
        init: resolve!(c"cuInit"),
        driver_get_version: resolve!(c"cuDriverGetVersion"),
        device_get_count: resolve!(c"cuDeviceGetCount"),
        device_get: resolve!(c"cuDeviceGet"),
        device_get_name: resolve!(c"cuDeviceGetName"),
        device_get_uuid: resolve!(c"cuDeviceGetUuid_v2"),
        device_total_mem: resolve!(c"cuDeviceTotalMem_v2"),
        device_get_pci_bus_id: resolve!(c"cuDeviceGetPCIBusId"),
        device_get_attribute: resolve!(c"cuDeviceGetAttribute"),
        primary_ctx_retain: resolve!(c"cuDevicePrimaryCtxRetain"),
        primary_ctx_release: resolve!(c"cuDevicePrimaryCtxRelease_v2"),
        ctx_push_current: resolve!(c"cuCtxPushCurrent_v2"),
        ctx_pop_current: resolve!(c"cuCtxPopCurrent_v2"),
        mem_get_info: resolve!(c"cuMemGetInfo_v2"),
    })
}

/// Reinterprets a resolved symbol as the function pointer type `F`.
///
/// # Safety
/// `F` is an `extern "C"` function pointer type matching the symbol's definition.
unsafe fn fn_pointer<F: Copy>(symbol: *mut c_void) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>()) };
    // SAFETY: same size (checked at compile time); validity per the caller's contract.
    unsafe { std::mem::transmute_copy(&symbol) }
}

impl Driver {
    /// `cuInit` then every visible device's facts; no device at all is an empty list.
    ///
    /// # Errors
    /// The NVML code for the first driver call that failed.
    pub fn enumerate(&self) -> Result<Vec<DeviceInfo>, NvmlReturn> {
        // SAFETY: plain value.
        match unsafe { (self.init)(0) } {
            CUDA_SUCCESS => {}
            CUDA_ERROR_NO_DEVICE => return Ok(Vec::new()),
            r => return Err(nvml_code(r)),
        }
        let mut count = 0;
        // SAFETY: out-pointer to a live local.
        check(unsafe { (self.device_get_count)(&mut count) })?;
        (0..count).map(|ordinal| self.device(ordinal)).collect()
    }

    fn device(&self, ordinal: c_int) -> Result<DeviceInfo, NvmlReturn> {
        let mut handle = 0;
        let mut name = [0 as c_char; 256];
        let mut uuid = [0u8; 16];
        let mut total = 0usize;
        // SAFETY: out-pointers to live locals; the name buffer's length is passed with it.
        unsafe {
            check((self.device_get)(&mut handle, ordinal))?;
            check((self.device_get_name)(
                name.as_mut_ptr(),
                name.len() as c_int - 1,
                handle,
            ))?;
            check((self.device_get_uuid)(&mut uuid, handle))?;
            check((self.device_total_mem)(&mut total, handle))?;
        }
        // SAFETY: the buffer's last byte was never handed to the driver, so it is a NUL.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(DeviceInfo {
            handle,
            name,
            uuid: uuid_string(&uuid),
            bus_id: self.bus_id(handle)?,
            compute_capability: (
                self.attribute(ATTR_CC_MAJOR, handle)?,
                self.attribute(ATTR_CC_MINOR, handle)?,
            ),
            total_memory: total as u64,
        })
    }

    fn attribute(&self, attribute: c_int, device: CuDevice) -> Result<i32, NvmlReturn> {
        let mut value = 0;
        // SAFETY: out-pointer to a live local.
        check(unsafe { (self.device_get_attribute)(&mut value, attribute, device) })?;
        Ok(value)
    }

    fn bus_id(&self, device: CuDevice) -> Result<BusId, NvmlReturn> {
        let mut text = [0 as c_char; 64];
        // SAFETY: the buffer's length is passed with it, one byte kept for a NUL.
        let r = unsafe {
            (self.device_get_pci_bus_id)(text.as_mut_ptr(), text.len() as c_int - 1, device)
        };
        if r == CUDA_SUCCESS {
            // SAFETY: the last byte was never handed to the driver.
            let text = unsafe { CStr::from_ptr(text.as_ptr()) }.to_string_lossy();
            if let Some(id) = BusId::parse(&text) {
                return Ok(id);
            }
        }
        let field = |attribute| -> Result<u32, NvmlReturn> {
            Ok(self.attribute(attribute, device)? as u32)
        };
        Ok(BusId {
            domain: field(ATTR_PCI_DOMAIN_ID)?,
            bus: field(ATTR_PCI_BUS_ID)? as u8,
            device: field(ATTR_PCI_DEVICE_ID)? as u8,
            function: 0,
        })
    }

    /// `cuDriverGetVersion` (e.g. 13000 for CUDA 13.0).
    ///
    /// # Errors
    /// The NVML code of the driver's failure.
    pub fn cuda_version(&self) -> Result<i32, NvmlReturn> {
        let mut version = 0;
        // SAFETY: out-pointer to a live local.
        check(unsafe { (self.driver_get_version)(&mut version) })?;
        Ok(version)
    }

    /// (free, total) bytes of `device`'s memory, from `cuMemGetInfo_v2` in its primary context.
    /// The context is retained, pushed, popped and released, so the calling thread's current
    /// context and the primary context's reference count are as before. If no one else holds
    /// the primary context, the driver creates and destroys it around the query.
    ///
    /// # Errors
    /// The NVML code of the first driver failure.
    pub fn memory(&self, device: CuDevice) -> Result<(u64, u64), NvmlReturn> {
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: out-pointer to a live local.
        check(unsafe { (self.primary_ctx_retain)(&mut ctx, device) })?;
        // SAFETY: `ctx` is the retained primary context.
        let pushed = check(unsafe { (self.ctx_push_current)(ctx) });
        let (mut free, mut total) = (0usize, 0usize);
        let queried = pushed.and_then(|()| {
            // SAFETY: out-pointers to live locals.
            check(unsafe { (self.mem_get_info)(&mut free, &mut total) })
        });
        if pushed.is_ok() {
            let mut popped: CuContext = std::ptr::null_mut();
            // SAFETY: pops the context pushed above; out-pointer to a live local.
            let r = unsafe { (self.ctx_pop_current)(&mut popped) };
            if r != CUDA_SUCCESS {
                log!(
                    Level::Warn,
                    "cuCtxPopCurrent_v2 after a memory query failed ({r})"
                );
            }
        }
        // SAFETY: releases the reference retained above.
        let r = unsafe { (self.primary_ctx_release)(device) };
        if r != CUDA_SUCCESS {
            log!(
                Level::Warn,
                "cuDevicePrimaryCtxRelease_v2 after a memory query failed ({r})"
            );
        }
        queried?;
        Ok((free as u64, total as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_map_to_nvml_codes() {
        assert_eq!(nvml_code(3), ERROR_DRIVER_NOT_LOADED);
        assert_eq!(nvml_code(46), ERROR_GPU_IS_LOST);
        assert_eq!(nvml_code(2), ERROR_MEMORY);
        assert_eq!(nvml_code(700), ERROR_UNKNOWN);
    }
}
