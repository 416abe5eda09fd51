//! The facts only the host knows (special call `NVML_FACTS`), over a connection of the facade's
//! own: the shim's channels are private to it. Opened the first time such a fact is asked for,
//! used for one request, closed with `GOODBYE`.
//!
//! Configuration is the shim's: exactly one of `VGPU_REGION` (absolute path of the region file)
//! or `VGPU_HOST` (`ip:port`).

use std::net::SocketAddr;
use std::path::PathBuf;

use protocol::handshake::{Hello, Welcome, PROTOCOL_VERSION};
use protocol::special::{self, nvml::Facts, nvml::FactsRequest};
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

/// Asks the host for the facts about the devices at `bus_ids` (in order).
///
/// # Errors
/// A [`HostError`]; the caller answers `NVML_ERROR_NOT_SUPPORTED` for the facts concerned.
pub fn fetch_facts(bus_ids: Vec<String>) -> Result<Facts, HostError> {
    let n = bus_ids.len();
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
