//! `vgpuctl smi`: the GPUs as a CUDA program under vgpu sees them. It runs this executable's
//! hidden `smi-probe` mode through [`crate::run`] (shim preloaded, host started), and the probe
//! asks `libcuda.so.1` (which is then the shim) through `dlopen`/`dlsym`.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::io::Write;

use crate::Error;

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
const ATTR_CC_MAJOR: c_int = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
const ATTR_CC_MINOR: c_int = 76;

/// One device as the driver API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// Ordinal.
    pub index: i32,
    /// `cuDeviceGetName`.
    pub name: String,
    /// `cuDeviceGetUuid_v2`.
    pub uuid: [u8; 16],
    /// `cuDeviceTotalMem_v2`, bytes.
    pub total_mem: usize,
    /// Compute capability (attributes 75, 76).
    pub cc: (i32, i32),
}

/// A UUID in nvidia-smi's form: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Prints the table.
pub fn print_table(gpus: &[GpuInfo], out: &mut dyn Write) {
    let width = gpus.iter().map(|g| g.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<3}  {:<width$}  {:<40}  {:>10}  CC",
        "GPU", "NAME", "UUID", "MEMORY"
    )
    .ok();
    for g in gpus {
        writeln!(
            out,
            "{:<3}  {:<width$}  {:<40}  {:>6} MiB  {}.{}",
            g.index,
            g.name,
            format_uuid(&g.uuid),
            g.total_mem >> 20,
            g.cc.0,
            g.cc.1
        )
        .ok();
    }
}

/// One process on one device, as NVML lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    /// NVML device index.
    pub gpu: u32,
    /// Process id.
    pub pid: u32,
    /// Device memory it holds, bytes.
    pub used_bytes: u64,
}

/// Prints the processes below the device table, as `nvidia-smi` does (nothing without any).
pub fn print_processes(processes: &[GpuProcess], out: &mut dyn Write) {
    if processes.is_empty() {
        return;
    }
    writeln!(out, "\n{:<3}  {:<8}  {:>10}", "GPU", "PID", "GPU MEMORY").ok();
    for p in processes {
        writeln!(
            out,
            "{:<3}  {:<8}  {:>6} MiB",
            p.gpu,
            p.pid,
            p.used_bytes >> 20
        )
        .ok();
    }
}

/// `nvmlProcessInfo_t`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NvmlProcessInfo {
    pid: c_uint,
    used_gpu_memory: u64,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

type NvmlInit = unsafe extern "C" fn() -> c_int;
type NvmlHandle = unsafe extern "C" fn(c_uint, *mut *mut std::ffi::c_void) -> c_int;
type NvmlProcesses =
    unsafe extern "C" fn(*mut std::ffi::c_void, *mut c_uint, *mut NvmlProcessInfo) -> c_int;

/// The compute processes of `devices` devices through `libnvidia-ml.so.1` (under vgpu, the
/// NVML facade: the guest's processes as the host counts them). Empty when NVML is missing or
/// does not list processes.
pub fn probe_processes(devices: usize) -> Vec<GpuProcess> {
    // SAFETY: loading NVML (or the facade) runs no harmful initialisers.
    let Ok(lib) = (unsafe { libloading::Library::new("libnvidia-ml.so.1") }) else {
        return Vec::new();
    };
    let (Ok(init), Ok(handle), Ok(list), Ok(shutdown)) = (
        symbol::<NvmlInit>(&lib, "nvmlInit_v2"),
        symbol::<NvmlHandle>(&lib, "nvmlDeviceGetHandleByIndex_v2"),
        symbol::<NvmlProcesses>(&lib, "nvmlDeviceGetComputeRunningProcesses_v3"),
        symbol::<NvmlInit>(&lib, "nvmlShutdown"),
    ) else {
        return Vec::new();
    };
    // SAFETY: (also below) functions of the loaded library with NVML's signatures; every
    // out-pointer is a live local, and the array holds the count passed.
    if unsafe { init() } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    for gpu in 0..devices as c_uint {
        let mut device = std::ptr::null_mut();
        // SAFETY: see above.
        if unsafe { handle(gpu, &mut device) } != 0 {
            continue;
        }
        let mut infos = vec![NvmlProcessInfo::default(); 64];
        let mut count = infos.len() as c_uint;
        // SAFETY: see above.
        let mut rc = unsafe { list(device, &mut count, infos.as_mut_ptr()) };
        if rc == 7 && (count as usize) > infos.len() && count <= 4096 {
            infos.resize(count as usize, NvmlProcessInfo::default());
            count = infos.len() as c_uint;
            // SAFETY: see above.
            rc = unsafe { list(device, &mut count, infos.as_mut_ptr()) };
        }
        if rc != 0 {
            continue;
        }
        found.extend(
            infos[..(count as usize).min(infos.len())]
                .iter()
                .map(|i| GpuProcess {
                    gpu,
                    pid: i.pid,
                    used_bytes: i.used_gpu_memory,
                }),
        );
    }
    // SAFETY: see above.
    unsafe { shutdown() };
    found
}

/// `smi --host`: every client of a host, one row each, as `nvidia-smi` lists processes.
pub fn print_host_table(report: &host_report::HostReport, out: &mut dyn Write) {
    writeln!(out, "{}", crate::top::summary(report)).ok();
    let titles = [
        "PID",
        "VIA",
        "WORKER",
        "GPU MEMORY",
        "CONTEXTS",
        "MODULES",
        "STREAMS",
        "THREADS",
        "CLIENT",
        "WHERE",
    ];
    let rows: Vec<Vec<String>> = std::iter::once(titles.map(str::to_owned).to_vec())
        .chain(report.clients.iter().map(|c| {
            vec![
                c.pid.to_string(),
                c.transport.word().to_owned(),
                c.worker_pid.to_string(),
                format!("{} MiB", c.gpu_memory_bytes >> 20),
                c.contexts.to_string(),
                c.modules.to_string(),
                c.streams.to_string(),
                c.threads.to_string(),
                c.client.clone(),
                c.region
                    .clone()
                    .or_else(|| c.peer.clone())
                    .unwrap_or_default(),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..titles.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end()).ok();
    }
    if report.clients.is_empty() {
        writeln!(out, "no clients").ok();
    }
}

type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceGetUuid = unsafe extern "C" fn(*mut [u8; 16], c_int) -> c_int;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

fn probe_error(what: &str, rc: c_int) -> Error {
    let hint = if rc == 100 {
        " (no CUDA-capable GPU)"
    } else {
        ""
    };
    Error::Refused(format!("{what} failed with CUDA error {rc}{hint}"))
}

fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, Error> {
    // SAFETY: every caller names a driver-API function and `T` is that function's signature
    // from cuda.h; the library outlives every call made through the pointer.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| Error::Refused(format!("libcuda.so.1 lacks {name}: {e}")))
}

/// Loads `libcuda.so.1` (the shim, when preloaded) and reads every device.
///
/// # Errors
///
/// [`Error::Refused`] when the library is missing, lacks a function, or a call fails (one
/// line, e.g. "cuInit failed with CUDA error 100 (no CUDA-capable GPU)").
pub fn probe() -> Result<Vec<GpuInfo>, Error> {
    // SAFETY: loading the CUDA driver (or the preloaded shim) runs no harmful initialisers.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|e| Error::Refused(format!("cannot load libcuda.so.1: {e}")))?;
    let init: CuInit = symbol(&lib, "cuInit")?;
    let count: CuDeviceGetCount = symbol(&lib, "cuDeviceGetCount")?;
    let get: CuDeviceGet = symbol(&lib, "cuDeviceGet")?;
    let name: CuDeviceGetName = symbol(&lib, "cuDeviceGetName")?;
    let uuid: CuDeviceGetUuid = symbol(&lib, "cuDeviceGetUuid_v2")?;
    let mem: CuDeviceTotalMem = symbol(&lib, "cuDeviceTotalMem_v2")?;
    let attr: CuDeviceGetAttribute = symbol(&lib, "cuDeviceGetAttribute")?;
    // SAFETY: (also for the calls below) the pointers come from the loaded library with the
    // signatures above; every out-pointer is a live local of the right type and size.
    let rc = unsafe { init(0) };
    if rc != 0 {
        return Err(probe_error("cuInit", rc));
    }
    let mut n: c_int = 0;
    // SAFETY: see above.
    let rc = unsafe { count(&mut n) };
    if rc != 0 {
        return Err(probe_error("cuDeviceGetCount", rc));
    }
    if n <= 0 {
        return Err(Error::Refused("no CUDA-capable GPU".into()));
    }
    let mut gpus = Vec::new();
    for ordinal in 0..n {
        let mut dev: c_int = 0;
        // SAFETY: see above.
        let rc = unsafe { get(&mut dev, ordinal) };
        if rc != 0 {
            return Err(probe_error("cuDeviceGet", rc));
        }
        let mut buf = [0 as c_char; 256];
        // SAFETY: see above; the length passed is the buffer's.
        let rc = unsafe { name(buf.as_mut_ptr(), buf.len() as c_int, dev) };
        if rc != 0 {
            return Err(probe_error("cuDeviceGetName", rc));
        }
        buf[255] = 0;
        // SAFETY: `buf` is NUL-terminated (last byte forced to 0).
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut id = [0u8; 16];
        // SAFETY: see above.
        let rc = unsafe { uuid(&mut id, dev) };
        if rc != 0 {
            return Err(probe_error("cuDeviceGetUuid_v2", rc));
        }
        let mut bytes = 0usize;
        // SAFETY: see above.
        let rc = unsafe { mem(&mut bytes, dev) };
        if rc != 0 {
            return Err(probe_error("cuDeviceTotalMem_v2", rc));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: see above.
        let rc = unsafe { attr(&mut major, ATTR_CC_MAJOR, dev) };
        if rc != 0 {
            return Err(probe_error("cuDeviceGetAttribute(75)", rc));
        }
        // SAFETY: see above.
        let rc = unsafe { attr(&mut minor, ATTR_CC_MINOR, dev) };
        if rc != 0 {
            return Err(probe_error("cuDeviceGetAttribute(76)", rc));
        }
        gpus.push(GpuInfo {
            index: ordinal,
            name: text,
            uuid: id,
            total_mem: bytes,
            cc: (major, minor),
        });
    }
    Ok(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_nvidia_smi_shape() {
        let id: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(format_uuid(&id), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn table_has_one_row_per_gpu() {
        let g = GpuInfo {
            index: 0,
            name: "NVIDIA H200".into(),
            uuid: [0xab; 16],
            total_mem: 143_771_287_552,
            cc: (9, 0),
        };
        let mut out = Vec::new();
        print_table(&[g.clone(), GpuInfo { index: 1, ..g }], &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("0    NVIDIA H200  GPU-abababab-abab"));
        assert!(lines[2].contains("137110 MiB  9.0"));
    }
}
