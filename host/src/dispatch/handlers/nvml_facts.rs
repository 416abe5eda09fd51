//! Host half of `special::NVML_FACTS`: what the guest's NVML facade cannot learn through the
//! driver API. Everything is read from the host's own files; the guest's bus id texts are parsed
//! into numbers before any path is built from them.
//!
//! - Driver version: the host's real NVML (`libnvidia-ml.so.1`, `nvmlSystemGetDriverVersion`),
//!   else `/proc/driver/nvidia/version`, else none (the facade then answers
//!   `NVML_ERROR_NOT_SUPPORTED`: a CUDA version is not a driver version). Read once per worker.
//! - PCI ids: `/sys/bus/pci/devices/<bus id>/{vendor,device,subsystem_vendor,subsystem_device}`.
//! - Minor number: `/proc/driver/nvidia/gpus/<bus id>/information`, line `Device Minor:`.
//!
//! `special::NVML_MEMORY` ([`nvml_memory`]) asks the host's real NVML for one device's memory,
//! which counts the driver's reservation in the total as the guest's native NVML would.

use std::ffi::{c_char, c_int, c_uint};
use std::path::Path;
use std::sync::OnceLock;

use cuda_headers::CUresult;
use protocol::special::nvml::{
    BusId, DriverVersion, Facts, FactsRequest, MemoryFacts, PciFacts, VersionSource,
    MAX_BUS_ID_LEN, MAX_VERSION_LEN,
};
use protocol::{DecodeError, Decoder, ResponseHeader};

use crate::dispatch::ClientContext;

/// `u32 n`, `n × bytes bus_id` → result, then [`Facts`] for the `n` devices (see
/// `protocol::special::nvml`). More than 64 devices is malformed (`CUDA_ERROR_INVALID_VALUE`).
pub fn nvml_facts(dec: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let request = FactsRequest::decode(dec)?;
    dec.finish()?;
    let facts = Facts {
        driver_version: driver_version().clone(),
        devices: request
            .bus_ids
            .iter()
            .map(|text| {
                (text.len() <= MAX_BUS_ID_LEN)
                    .then(|| BusId::parse(text))
                    .flatten()
                    .map(|id| pci_facts(Path::new("/"), &id))
                    .unwrap_or_default()
            })
            .collect(),
    };
    facts.encode(&mut ResponseHeader::start(out, CUresult::CUDA_SUCCESS.0));
    Ok(())
}

/// `bytes bus_id` → result, [`MemoryFacts`] (see `protocol::special::NVML_MEMORY`).
pub fn nvml_memory(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let text = dec.get_bytes()?;
    dec.finish()?;
    let id = std::str::from_utf8(text)
        .ok()
        .filter(|t| t.len() <= MAX_BUS_ID_LEN)
        .and_then(BusId::parse);
    let Some(id) = id else {
        tracing::warn!("NVML_MEMORY: not a PCI bus id");
        ResponseHeader::start(out, CUresult::CUDA_ERROR_INVALID_VALUE.0);
        return Ok(());
    };
    match host_nvml().map(|nvml| nvml.memory(&id)) {
        Some(Ok(mut memory)) => {
            if client.quota.is_set() {
                // The client's quota stands for the card (`dispatch/quota.rs`).
                (memory.free, memory.total) = client.quota.report(memory.free, memory.total);
                memory.reserved = memory.reserved.min(memory.total - memory.free);
                memory.used = memory.total - memory.free;
            }
            memory.encode(&mut ResponseHeader::start(out, 0));
        }
        Some(Err(r)) => {
            ResponseHeader::start(out, r.0);
        }
        None => {
            ResponseHeader::start(out, CUresult::CUDA_ERROR_NOT_SUPPORTED.0);
        }
    }
    Ok(())
}

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
#[derive(Default)]
struct NvmlMemoryV2 {
    version: u32,
    total: u64,
    reserved: u64,
    free: u64,
    used: u64,
}

/// `nvmlMemory_v2`: the struct's size with version 2 in the top byte (nvml.h).
const NVML_MEMORY_V2: u32 = std::mem::size_of::<NvmlMemoryV2>() as u32 | 2 << 24;
const _: () = assert!(NVML_MEMORY_V2 == 0x0200_0028);

type Device = *mut std::ffi::c_void;
type ByBusId = unsafe extern "C" fn(*const c_char, *mut Device) -> c_int;
type MemoryV1 = unsafe extern "C" fn(Device, *mut NvmlMemory) -> c_int;
type MemoryV2 = unsafe extern "C" fn(Device, *mut NvmlMemoryV2) -> c_int;

/// The host's real NVML, initialised once per worker and kept: memory is asked for repeatedly.
struct HostNvml {
    by_bus_id: ByBusId,
    memory_v1: MemoryV1,
    memory_v2: Option<MemoryV2>,
    /// Keeps the functions above loaded.
    _lib: libloading::Library,
}

fn host_nvml() -> Option<&'static HostNvml> {
    static NVML: OnceLock<Option<HostNvml>> = OnceLock::new();
    NVML.get_or_init(|| {
        type Init = unsafe extern "C" fn() -> c_int;
        // SAFETY: loading NVML runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new("libnvidia-ml.so.1") }.ok()?;
        // SAFETY: these symbols have these signatures in nvml.h (the v2 bus-id lookup since
        // NVML 5.319, `nvmlDeviceGetMemoryInfo_v2` since 11.x; the latter may be absent).
        let (init, by_bus_id, memory_v1, memory_v2) = unsafe {
            (
                *lib.get::<Init>(b"nvmlInit_v2\0").ok()?,
                *lib.get::<ByBusId>(b"nvmlDeviceGetHandleByPciBusId_v2\0")
                    .ok()?,
                *lib.get::<MemoryV1>(b"nvmlDeviceGetMemoryInfo\0").ok()?,
                lib.get::<MemoryV2>(b"nvmlDeviceGetMemoryInfo_v2\0")
                    .ok()
                    .map(|f| *f),
            )
        };
        // SAFETY: no arguments; NVML counts initialisations, and this one is never undone.
        if unsafe { init() } != 0 {
            tracing::info!("the host's NVML does not initialise: memory answers come from CUDA");
            return None;
        }
        Some(HostNvml {
            by_bus_id,
            memory_v1,
            memory_v2,
            _lib: lib,
        })
    })
    .as_ref()
}

impl HostNvml {
    /// The memory of the device at `id`: `CUDA_ERROR_NOT_FOUND` when NVML does not know it.
    fn memory(&self, id: &BusId) -> Result<MemoryFacts, CUresult> {
        let name = std::ffi::CString::new(format!(
            "{:08x}:{:02x}:{:02x}.{:x}",
            id.domain, id.bus, id.device, id.function
        ))
        .map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: a NUL-terminated text and an out-pointer to a live local.
        if unsafe { (self.by_bus_id)(name.as_ptr(), &mut device) } != 0 {
            return Err(CUresult::CUDA_ERROR_NOT_FOUND);
        }
        if let Some(v2) = self.memory_v2 {
            let mut m = NvmlMemoryV2 {
                version: NVML_MEMORY_V2,
                ..Default::default()
            };
            // SAFETY: a handle NVML just gave and a versioned struct of the size it names.
            if unsafe { v2(device, &mut m) } == 0 {
                return Ok(MemoryFacts {
                    total: m.total,
                    reserved: m.reserved,
                    free: m.free,
                    used: m.used,
                });
            }
        }
        let mut m = NvmlMemory::default();
        // SAFETY: a handle NVML just gave and an out-pointer to a live local.
        if unsafe { (self.memory_v1)(device, &mut m) } != 0 {
            return Err(CUresult::CUDA_ERROR_UNKNOWN);
        }
        Ok(MemoryFacts {
            total: m.total,
            reserved: 0,
            free: m.free,
            used: m.used,
        })
    }
}

fn driver_version() -> &'static Option<DriverVersion> {
    static VERSION: OnceLock<Option<DriverVersion>> = OnceLock::new();
    VERSION.get_or_init(|| {
        let found = nvml_driver_version()
            .map(|text| (VersionSource::Nvml, text))
            .or_else(|| {
                let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
                Some((VersionSource::ProcFile, parse_proc_version(&text)?))
            });
        match found {
            Some((source, text)) if text.len() <= MAX_VERSION_LEN => {
                Some(DriverVersion { source, text })
            }
            _ => {
                tracing::info!("no driver version: neither libnvidia-ml.so.1 nor /proc/driver/nvidia/version answers");
                None
            }
        }
    })
}

/// The host's real NVML, loaded for this one question and unloaded again.
fn nvml_driver_version() -> Option<String> {
    type Init = unsafe extern "C" fn() -> c_int;
    type GetVersion = unsafe extern "C" fn(*mut c_char, c_uint) -> c_int;
    // SAFETY: loading NVML runs its initialisers, which have no preconditions.
    let lib = unsafe { libloading::Library::new("libnvidia-ml.so.1") }.ok()?;
    // SAFETY: the symbols have these signatures in every NVML since 4.304 (nvml.h).
    let (init, get, shutdown) = unsafe {
        (
            *lib.get::<Init>(b"nvmlInit_v2\0").ok()?,
            *lib.get::<GetVersion>(b"nvmlSystemGetDriverVersion\0")
                .ok()?,
            *lib.get::<Init>(b"nvmlShutdown\0").ok()?,
        )
    };
    // SAFETY: no arguments.
    if unsafe { init() } != 0 {
        return None;
    }
    let mut buf = [0 as c_char; 96];
    // SAFETY: the buffer holds `buf.len()` bytes, as the length says.
    let rc = unsafe { get(buf.as_mut_ptr(), buf.len() as c_uint) };
    // SAFETY: paired with the successful init above.
    unsafe { shutdown() };
    if rc != 0 {
        return None;
    }
    // SAFETY: NVML NUL-terminated the text within the buffer on success; the last byte is
    // forced to NUL in case it did not.
    let text = unsafe {
        buf[buf.len() - 1] = 0;
        std::ffi::CStr::from_ptr(buf.as_ptr())
    };
    text.to_str()
        .ok()
        .map(str::to_owned)
        .filter(|t| !t.is_empty())
}

/// The version in `/proc/driver/nvidia/version`'s `NVRM version:` line: the first token made of
/// digits and at least one dot (`580.159.04`).
fn parse_proc_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|t| {
            t.contains('.')
                && t.starts_with(|c: char| c.is_ascii_digit())
                && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_owned)
}

/// PCI ids and minor number of `id`, read under `root` (`/` in production).
fn pci_facts(root: &Path, id: &BusId) -> PciFacts {
    let name = id.sysfs_name();
    let dev = root.join("sys/bus/pci/devices").join(&name);
    let hex = |file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(dev.join(file)).ok()?;
        u32::from_str_radix(text.trim().trim_start_matches("0x"), 16)
            .ok()
            .filter(|v| *v <= 0xffff)
    };
    let pair = |high: &str, low: &str| Some(hex(high)? << 16 | hex(low)?);
    let ids = pair("device", "vendor").zip(pair("subsystem_device", "subsystem_vendor"));
    let minor = std::fs::read_to_string(
        root.join("proc/driver/nvidia/gpus")
            .join(&name)
            .join("information"),
    )
    .ok()
    .and_then(|text| parse_minor(&text));
    PciFacts { ids, minor }
}

/// `Device Minor:` of `/proc/driver/nvidia/gpus/<bus id>/information`.
fn parse_minor(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Device Minor:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proc_version_line() {
        let proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Oct  2 10:00:00 UTC 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(
            parse_proc_version(proprietary).as_deref(),
            Some("580.159.04")
        );
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Jan 23 2025\n";
        assert_eq!(parse_proc_version(open).as_deref(), Some("570.86.15"));
        assert_eq!(parse_proc_version("GCC version: 12.2\n"), None);
    }

    #[test]
    fn reads_pci_ids_and_minor_from_files() {
        let root = std::env::temp_dir().join(format!("vgpu-nvml-facts-{}", std::process::id()));
        let dev = root.join("sys/bus/pci/devices/0000:17:00.0");
        let gpu = root.join("proc/driver/nvidia/gpus/0000:17:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&gpu).unwrap();
        for (file, value) in [
            ("vendor", "0x10de\n"),
            ("device", "0x2335\n"),
            ("subsystem_vendor", "0x10de\n"),
            ("subsystem_device", "0x18be\n"),
        ] {
            std::fs::write(dev.join(file), value).unwrap();
        }
        std::fs::write(
            gpu.join("information"),
            "Model: \t\t NVIDIA H200\nIRQ:   \t\t 150\nDevice Minor: \t 3\n",
        )
        .unwrap();
        let id = BusId::parse("00000000:17:00.0").unwrap();
        assert_eq!(
            pci_facts(&root, &id),
            PciFacts {
                ids: Some((0x2335_10de, 0x18be_10de)),
                minor: Some(3)
            }
        );
        let absent = BusId::parse("0000:18:00.0").unwrap();
        assert_eq!(pci_facts(&root, &absent), PciFacts::default());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn answers_a_request_and_refuses_a_hostile_one() {
        let mut req = Vec::new();
        FactsRequest {
            bus_ids: vec!["0000:17:00.0".into(), "../../../etc".into()],
        }
        .encode(&mut protocol::Encoder::new(&mut req));
        let mut out = Vec::new();
        nvml_facts(&mut Decoder::new(&req), &mut out).unwrap();
        let mut dec = Decoder::new(&out);
        assert_eq!(ResponseHeader::read(&mut dec).unwrap().result, 0);
        let facts = Facts::decode(&mut dec, 2).unwrap();
        assert_eq!(facts.devices[1], PciFacts::default());

        let mut req = Vec::new();
        protocol::Encoder::new(&mut req).put(65u32);
        assert!(nvml_facts(&mut Decoder::new(&req), &mut Vec::new()).is_err());
    }

    #[test]
    fn memory_requests_are_checked_before_nvml_is_asked() {
        let client =
            ClientContext::new(std::path::PathBuf::from("/nonexistent"), Default::default());
        let ask = |body: &[u8]| {
            let mut req = Vec::new();
            protocol::Encoder::new(&mut req).put_bytes(body);
            let mut out = Vec::new();
            nvml_memory(&client, &mut Decoder::new(&req), &mut out).expect("decodes");
            ResponseHeader::read(&mut Decoder::new(&out))
                .expect("header")
                .result
        };
        let invalid = CUresult::CUDA_ERROR_INVALID_VALUE.0;
        assert_eq!(ask(b"not a bus id"), invalid);
        assert_eq!(ask(b"../../etc/passwd"), invalid);
        assert_eq!(ask(&[b'0'; 200]), invalid);
        // A well-formed id: answered by NVML where the host has one, else NOT_SUPPORTED (never a
        // crash, never success without NVML).
        let r = ask(b"0000:00:06.0");
        if host_nvml().is_none() {
            assert_eq!(r, CUresult::CUDA_ERROR_NOT_SUPPORTED.0);
        }
        let mut out = Vec::new();
        assert!(
            nvml_memory(&client, &mut Decoder::new(&[1, 2]), &mut out).is_err(),
            "truncated"
        );
    }
}
