//! The shim's configuration: environment variables only (no files, no sockets, no mappings).
//!
//! - `VGPU_REGION`: absolute path of the shared-memory region file the host serves.
//! - `VGPU_HOST`: `ip:port` of a host reached over TCP.
//!
//! Exactly one of the two must be set for calls that need the host.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the guest reaches `vgpu-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A shared-memory region file (`VGPU_REGION`).
    Region(PathBuf),
    /// A TCP address (`VGPU_HOST`).
    Tcp(SocketAddr),
}

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither variable is set.
    #[error("neither VGPU_REGION nor VGPU_HOST is set")]
    Missing,
    /// Both are set.
    #[error("both VGPU_REGION and VGPU_HOST are set; set only one")]
    Both,
    /// A variable is not valid Unicode.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// `VGPU_REGION` is empty or relative.
    #[error("VGPU_REGION={0:?} is not an absolute path")]
    RegionNotAbsolute(String),
    /// `VGPU_HOST` is not `ip:port`.
    #[error("VGPU_HOST={0:?} is not an ip:port address")]
    BadHost(String),
}

/// Reads the transport from a variable lookup (the process environment in production).
///
/// # Errors
/// A [`ConfigError`] naming what is wrong.
pub fn transport_from(
    lookup: impl Fn(&'static str) -> Option<std::ffi::OsString>,
) -> Result<Transport, ConfigError> {
    let text = |name: &'static str| -> Result<Option<String>, ConfigError> {
        match lookup(name) {
            None => Ok(None),
            Some(value) => value
                .into_string()
                .map(Some)
                .map_err(|_| ConfigError::NotUnicode(name)),
        }
    };
    match (text("VGPU_REGION")?, text("VGPU_HOST")?) {
        (None, None) => Err(ConfigError::Missing),
        (Some(_), Some(_)) => Err(ConfigError::Both),
        (Some(region), None) => {
            let path = PathBuf::from(&region);
            if path.is_absolute() {
                Ok(Transport::Region(path))
            } else {
                Err(ConfigError::RegionNotAbsolute(region))
            }
        }
        (None, Some(host)) => host
            .trim()
            .parse()
            .map(Transport::Tcp)
            .map_err(|_| ConfigError::BadHost(host)),
    }
}

/// Reads the transport from the process environment.
///
/// # Errors
/// See [`transport_from`].
pub fn transport_from_env() -> Result<Transport, ConfigError> {
    transport_from(std::env::var_os)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(
        pairs: &'a [(&'static str, &'a str)],
    ) -> impl Fn(&'static str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.into())
        }
    }

    #[test]
    fn reads_each_transport_and_rejects_bad_input() {
        assert_eq!(transport_from(env(&[])), Err(ConfigError::Missing));
        assert_eq!(
            transport_from(env(&[("VGPU_REGION", "/dev/shm/vgpu")])),
            Ok(Transport::Region("/dev/shm/vgpu".into()))
        );
        assert_eq!(
            transport_from(env(&[("VGPU_HOST", "10.0.0.2:7300")])),
            Ok(Transport::Tcp("10.0.0.2:7300".parse().unwrap()))
        );
        assert_eq!(
            transport_from(env(&[("VGPU_HOST", "gpu-box")])),
            Err(ConfigError::BadHost("gpu-box".into()))
        );
        assert_eq!(
            transport_from(env(&[("VGPU_REGION", "rel/path")])),
            Err(ConfigError::RegionNotAbsolute("rel/path".into()))
        );
        assert_eq!(
            transport_from(env(&[("VGPU_REGION", "/x"), ("VGPU_HOST", "1.2.3.4:5")])),
            Err(ConfigError::Both)
        );
    }
}
