//! The facts only the host knows (special calls `NVML_FACTS` and `NVML_MEMORY`). They go over
//! the calling thread's own shim channel, through the shim's private export table
//! (`cuGetExportTable` of `vgpu.special.v1`, `shim/src/runtime_api/export_tables/vgpu_private.rs`),
//! so the host serves them from the guest process's one worker. Without that table (an older
//! shim), `NVML_FACTS` falls back to a connection of the facade's own, opened for one request and
//! closed with `GOODBYE`; memory then comes from CUDA (see `exports.rs`).
//!
//! Configuration is the shim's: exactly one of `VGPU_REGION` (absolute path of the region file)
//! or `VGPU_HOST` (`ip:port`).

use std::net::SocketAddr;
use std::path::PathBuf;

use protocol::handshake::{Hello, Welcome, PROTOCOL_VERSION};
use protocol::special::{self, nvml::Facts, nvml::FactsRequest, nvml::MemoryFacts};
use protocol::{Decoder, RequestHeader, ResponseHeader};
use transport::{Region, TcpClient, Transport};

/// The fingerprint of the signature list; the host refuses a handshake with another one.
const SIGNATURE_FINGERPRINT: u64 = shim_macros::signature_fingerprint!();

/// Why the host's facts are unavailable.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No usable `VGPU_REGION` / `VGPU_HOST`.
    #[error("{0}")]
    Config(String),
    /// The connection failed.
    #[error("cannot reach the vgpu host: {0}")]
    Transport(#[from] transport::TransportError),
    /// The host answered with a non-zero result.
    #[error("the vgpu host answered {call} with result {result}")]
    Refused {
        /// Which exchange.
        call: &'static str,
        /// The result code.
        result: u32,
    },
    /// The answer did not decode.
    #[error("malformed answer from the vgpu host: {0}")]
    Malformed(#[from] protocol::DecodeError),
}

/// Where the host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A shared-memory region file.
    Region(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// Reads the endpoint from a variable lookup (the process environment in production).
///
/// # Errors
/// [`HostError::Config`] naming what is wrong.
pub fn endpoint_from(
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Endpoint, HostError> {
    let text = |name: &str| {
        lookup(name)
            .map(|v| {
                v.into_string()
                    .map_err(|_| HostError::Config(format!("{name} is not valid UTF-8")))
            })
            .transpose()
    };
    match (text("VGPU_REGION")?, text("VGPU_HOST")?) {
        (None, None) => Err(HostError::Config(
            "neither VGPU_REGION nor VGPU_HOST is set".into(),
        )),
        (Some(_), Some(_)) => Err(HostError::Config(
            "both VGPU_REGION and VGPU_HOST are set; set only one".into(),
        )),
        (Some(region), None) if region.starts_with('/') => Ok(Endpoint::Region(region.into())),
        (Some(region), None) => Err(HostError::Config(format!(
            "VGPU_REGION={region:?} is not an absolute path"
        ))),
        (None, Some(host)) => host.trim().parse().map(Endpoint::Tcp).map_err(|_| {
            HostError::Config(format!("VGPU_HOST={host:?} is not an ip:port address"))
        }),
    }
}

/// The shim's private table: UUID bytes and the slot-1 signature (see the module docs).
const PRIVATE_TABLE: [u8; 16] = *b"vgpu.special.v1\0";
type SpecialCall =
    unsafe extern "system" fn(u32, *const u8, usize, *mut u8, usize, *mut usize) -> std::ffi::c_int;

/// Slot 1 of the shim's private table, if the loaded `libcuda.so.1` is a shim that has it.
fn shim_special_call() -> Option<SpecialCall> {
    static SLOT: std::sync::OnceLock<Option<SpecialCall>> = std::sync::OnceLock::new();
    *SLOT.get_or_init(|| {
        type GetExportTable =
            unsafe extern "system" fn(*mut *const usize, *const [u8; 16]) -> std::ffi::c_int;
        // SAFETY: a NUL-terminated name; RTLD_NOLOAD only looks the library up.
        let lib =
            unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if lib.is_null() {
            return None;
        }
        // SAFETY: a live handle (never closed) and a NUL-terminated name.
        let get = unsafe { libc::dlsym(lib, c"cuGetExportTable".as_ptr()) };
        if get.is_null() {
            return None;
        }
        // SAFETY: the driver API declares cuGetExportTable with this signature (cuda.h).
        let get: GetExportTable = unsafe { std::mem::transmute(get) };
        let mut table: *const usize = std::ptr::null();
        // SAFETY: out-pointer to a live local and a 16-byte id.
        if unsafe { get(&mut table, &PRIVATE_TABLE) } != 0 || table.is_null() {
            return None;
        }
        // SAFETY: the shim's table starts with its size in bytes; slot 1 exists when the size
        // says so, and holds a function of the `SpecialCall` signature.
        unsafe {
            if table.read() < 2 * std::mem::size_of::<usize>() {
                return None;
            }
            let slot = table.add(1).read();
            (slot != 0).then(|| std::mem::transmute::<usize, SpecialCall>(slot))
        }
    })
}

/// Sends special call `call` with body `body` over the shim's channel; `None` without the table.
fn via_shim(call: protocol::CallId, body: &[u8]) -> Option<Result<Vec<u8>, HostError>> {
    let send = shim_special_call()?;
    let mut answer = vec![0u8; 4096];
    loop {
        let mut len = 0usize;
        // SAFETY: `body` and `answer` are live buffers of the lengths passed.
        let r = unsafe {
            send(
                call.0,
                body.as_ptr(),
                body.len(),
                answer.as_mut_ptr(),
                answer.len(),
                &mut len,
            )
        };
        if r == 0 {
            answer.truncate(len);
            return Some(Ok(answer));
        }
        // The answer did not fit: the shim said how long it is (bounded, once).
        if r == 1 && len > answer.len() && len <= 1 << 20 {
            answer.resize(len, 0);
            continue;
        }
        return Some(Err(HostError::Refused {
            call: "special call through the shim",
            result: r as u32,
        }));
    }
}

/// The memory of the device at `bus_id` as the host's real NVML counts it.
///
/// # Errors
/// A [`HostError`] (the host has no NVML, or the shim has no private table): the caller answers
/// from CUDA instead.
pub fn fetch_memory(bus_id: &str) -> Result<MemoryFacts, HostError> {
    let mut body = Vec::new();
    protocol::Encoder::new(&mut body).put_bytes(bus_id.as_bytes());
    let answer = via_shim(special::NVML_MEMORY, &body).ok_or_else(|| {
        HostError::Config("the shim has no private table for host questions".into())
    })??;
    let mut dec = Decoder::new(&answer);
    let memory = MemoryFacts::decode(&mut dec)?;
    dec.finish()?;
    Ok(memory)
}

/// Asks the host for the facts about the devices at `bus_ids` (in order).
///
/// # Errors
/// A [`HostError`]; the caller answers `NVML_ERROR_NOT_SUPPORTED` for the facts concerned.
pub fn fetch_facts(bus_ids: Vec<String>) -> Result<Facts, HostError> {
    let n = bus_ids.len();
    let mut body = Vec::new();
    FactsRequest {
        bus_ids: bus_ids.clone(),
    }
    .encode(&mut protocol::Encoder::new(&mut body));
    if let Some(answer) = via_shim(special::NVML_FACTS, &body) {
        let answer = answer?;
        let mut dec = Decoder::new(&answer);
        let facts = Facts::decode(&mut dec, n)?;
        dec.finish()?;
        return Ok(facts);
    }
    let endpoint = endpoint_from(|name| std::env::var_os(name))?;
    // The region (if any) outlives the channel claimed in it.
    let region;
    let mut link: Box<dyn Transport> = match &endpoint {
        Endpoint::Region(path) => {
            region = Region::open(path)?;
            Box::new(region.connect()?)
        }
        Endpoint::Tcp(addr) => Box::new(TcpClient::connect(addr)?),
    };
    let mut request = Vec::new();
    let mut response = Vec::new();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        signature_fingerprint: SIGNATURE_FINGERPRINT,
        word_size: std::mem::size_of::<usize>() as u8,
        pid: std::process::id(),
        // SAFETY: gettid has no preconditions.
        tid: unsafe { libc::gettid() } as u32,
    };
    hello.encode(&mut RequestHeader::start(&mut request, special::HELLO, 0));
    exchange(&mut *link, &request, &mut response, "HELLO", |dec| {
        Welcome::decode(dec).map(drop)
    })?;
    request.clear();
    FactsRequest { bus_ids }.encode(&mut RequestHeader::start(
        &mut request,
        special::NVML_FACTS,
        0,
    ));
    let facts = exchange(&mut *link, &request, &mut response, "NVML_FACTS", |dec| {
        Facts::decode(dec, n)
    })?;
    request.clear();
    RequestHeader::start(&mut request, special::GOODBYE, 0);
    // The facts are in hand: a failed goodbye only means the host thread ends on its own.
    let _ = link.call(&request, &mut response);
    Ok(facts)
}

fn exchange<R>(
    link: &mut dyn Transport,
    request: &[u8],
    response: &mut Vec<u8>,
    call: &'static str,
    decode: impl FnOnce(&mut Decoder<'_>) -> Result<R, protocol::DecodeError>,
) -> Result<R, HostError> {
    link.call(request, response)?;
    let mut dec = Decoder::new(response);
    let header = ResponseHeader::read(&mut dec)?;
    if header.result != 0 {
        return Err(HostError::Refused {
            call,
            result: header.result,
        });
    }
    decode(&mut dec).map_err(HostError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.into())
        }
    }

    #[test]
    fn reads_the_shims_configuration() {
        assert_eq!(
            endpoint_from(env(&[("VGPU_REGION", "/dev/shm/vgpu")])).unwrap(),
            Endpoint::Region("/dev/shm/vgpu".into())
        );
        assert_eq!(
            endpoint_from(env(&[("VGPU_HOST", " 10.0.0.2:7300 ")])).unwrap(),
            Endpoint::Tcp("10.0.0.2:7300".parse().unwrap())
        );
        for bad in [
            &[][..],
            &[("VGPU_REGION", "rel")][..],
            &[("VGPU_HOST", "gpu-box")][..],
            &[("VGPU_REGION", "/x"), ("VGPU_HOST", "1.2.3.4:5")][..],
        ] {
            let err = endpoint_from(env(bad)).unwrap_err().to_string();
            assert!(err.contains("VGPU_"), "{bad:?}: {err}");
        }
    }
}
