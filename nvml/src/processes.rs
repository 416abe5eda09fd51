//! `nvmlDeviceGetComputeRunningProcesses` (`_v2`, `_v3`): the guest's processes that use the
//! GPU, with the device memory each holds, as the host counts them (special call
//! `NVML_PROCESSES`, [`crate::host::fetch_processes`]), the way `nvidia-smi` lists a
//! container's processes. The host counts memory per process, not per device, so every device
//! lists the same processes. Without the host's answer: `NVML_ERROR_NOT_SUPPORTED`.
#![allow(non_snake_case)]

use std::ffi::c_uint;
use std::panic::{catch_unwind, AssertUnwindSafe};

use protocol::special::nvml::ProcessMemory;

use crate::log::{log, Level};
use crate::state::{self, Handle};
use crate::types::*;

/// Fills the caller's array of `T` (`*count` entries of room) with `processes`, as NVML does:
/// with too little room (or a NULL array) `*count` becomes the number needed and the answer is
/// `NVML_ERROR_INSUFFICIENT_SIZE`.
///
/// # Safety
/// `count` is NULL or valid for a read and a write; `infos` is NULL or valid for `*count`
/// writes of `T`.
unsafe fn fill<T>(
    count: *mut c_uint,
    infos: *mut T,
    processes: &[ProcessMemory],
    entry: impl Fn(&ProcessMemory) -> T,
) -> Result<(), NvmlReturn> {
    if count.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL and valid per this function's contract.
    let room = unsafe { count.read() } as usize;
    let needed = processes.len();
    // SAFETY: as above.
    unsafe { count.write(needed as c_uint) };
    if needed == 0 {
        return Ok(());
    }
    if room < needed || infos.is_null() {
        return Err(ERROR_INSUFFICIENT_SIZE);
    }
    for (i, p) in processes.iter().enumerate() {
        // SAFETY: `i < needed <= room`, and `infos` holds `room` entries per the contract.
        unsafe { infos.add(i).write(entry(p)) };
    }
    Ok(())
}

/// The processes for `device`, or the NVML error to answer.
fn listed(device: Handle) -> Result<Vec<ProcessMemory>, NvmlReturn> {
    state::device(device)?;
    crate::host::fetch_processes()
        .map(|p| p.processes)
        .map_err(|e| {
            log!(Level::Debug, "no process list from the host: {e}");
            ERROR_NOT_SUPPORTED
        })
}

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

fn info(p: &ProcessMemory) -> ProcessInfo {
    ProcessInfo {
        pid: p.pid,
        used_gpu_memory: p.used_bytes,
        gpu_instance_id: VALUE_NOT_AVAILABLE_U32,
        compute_instance_id: VALUE_NOT_AVAILABLE_U32,
    }
}

/// `nvmlDeviceGetComputeRunningProcesses_v3`.
///
/// # Safety
/// `count` is valid for a read and a write; `infos` is NULL or holds `*count` entries.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> NvmlReturn {
    guarded("nvmlDeviceGetComputeRunningProcesses_v3", || {
        let processes = listed(device)?;
        // SAFETY: per this function's contract.
        unsafe { fill(count, infos, &processes, info) }
    })
}

/// `nvmlDeviceGetComputeRunningProcesses_v2`: as `_v3` (the same struct).
///
/// # Safety
/// As for [`nvmlDeviceGetComputeRunningProcesses_v3`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> NvmlReturn {
    // SAFETY: forwarded contract.
    unsafe { nvmlDeviceGetComputeRunningProcesses_v3(device, count, infos) }
}

/// `nvmlDeviceGetComputeRunningProcesses`: the first struct version (pid and memory).
///
/// # Safety
/// `count` is valid for a read and a write; `infos` is NULL or holds `*count` entries.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    device: Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfoV1,
) -> NvmlReturn {
    guarded("nvmlDeviceGetComputeRunningProcesses", || {
        let processes = listed(device)?;
        // SAFETY: per this function's contract.
        unsafe {
            fill(count, infos, &processes, |p| ProcessInfoV1 {
                pid: p.pid,
                used_gpu_memory: p.used_bytes,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_follows_nvmls_size_protocol() {
        let list = [
            ProcessMemory {
                pid: 1,
                used_bytes: 10,
            },
            ProcessMemory {
                pid: 2,
                used_bytes: 20,
            },
        ];
        let mut count: c_uint = 0;
        // SAFETY: a live count and no array (room 0).
        let r = unsafe { fill(&mut count, std::ptr::null_mut::<ProcessInfo>(), &list, info) };
        assert_eq!((r, count), (Err(ERROR_INSUFFICIENT_SIZE), 2));
        let mut infos = [ProcessInfo::default(); 4];
        count = 4;
        // SAFETY: a live count and an array of 4.
        let r = unsafe { fill(&mut count, infos.as_mut_ptr(), &list, info) };
        assert_eq!((r, count), (Ok(()), 2));
        assert_eq!(infos[1].pid, 2);
        assert_eq!(infos[1].used_gpu_memory, 20);
        assert_eq!(infos[1].gpu_instance_id, u32::MAX);
        count = 0;
        // SAFETY: a live count, nothing to write.
        let r = unsafe { fill(&mut count, std::ptr::null_mut::<ProcessInfo>(), &[], info) };
        assert_eq!((r, count), (Ok(()), 0));
        // SAFETY: a NULL count is refused before anything is read.
        let r = unsafe { fill(std::ptr::null_mut(), infos.as_mut_ptr(), &list, info) };
        assert_eq!(r, Err(ERROR_INVALID_ARGUMENT));
    }
}
