//! The shim's configuration: environment variables only (no files, no sockets, no mappings).
//!
//! - `VGPU_REGION`: absolute path of the shared-memory region file the host serves.
//! - `VGPU_HOST`: `ip:port` of a host reached over TCP, with TLS 1.3 (`VGPU_TLS_CA`,
//!   `VGPU_TLS_CERT`, `VGPU_TLS_KEY`: the CA that signed the host's certificate, this guest's
//!   certificate and its private key, PEM files; `VGPU_TLS_NAME`: the name the host's
//!   certificate must carry, default the address in `VGPU_HOST`), or in clear text only with
//!   `VGPU_TCP_CLEARTEXT=1` (for a host started with `--tcp-cleartext`).
//!
//! Exactly one of `VGPU_REGION` and `VGPU_HOST` must be set for calls that need the host. The
//! files are read when the first TCP connection is opened, not here.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the guest reaches `vgpu-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A shared-memory region file (`VGPU_REGION`).
    Region(PathBuf),
    /// A TCP address (`VGPU_HOST`) and how the connection is secured.
    Tcp(SocketAddr, TcpSecurity),
}

/// How a TCP connection to the host is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpSecurity {
    /// TLS 1.3 with a client certificate.
    Tls {
        /// `VGPU_TLS_CA`: the CA the host's certificate must chain to.
        ca: PathBuf,
        /// `VGPU_TLS_CERT`: this guest's certificate.
        cert: PathBuf,
        /// `VGPU_TLS_KEY`: its private key (readable by its owner only).
        key: PathBuf,
        /// `VGPU_TLS_NAME`, or the IP address of `VGPU_HOST`.
        server_name: String,
    },
    /// Clear text (`VGPU_TCP_CLEARTEXT=1`).
    Cleartext,
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
    /// `VGPU_HOST` without TLS settings or the clear-text flag.
    #[error(
        "VGPU_HOST needs VGPU_TLS_CA, VGPU_TLS_CERT and VGPU_TLS_KEY (TLS), or \
         VGPU_TCP_CLEARTEXT=1 for a host started with --tcp-cleartext"
    )]
    NoTls,
    /// Some of the three TLS files are named, not all.
    #[error("{0} is not set; VGPU_TLS_CA, VGPU_TLS_CERT and VGPU_TLS_KEY go together")]
    TlsIncomplete(&'static str),
    /// TLS settings and `VGPU_TCP_CLEARTEXT=1` both.
    #[error("VGPU_TCP_CLEARTEXT=1 and VGPU_TLS_* are both set; choose one")]
    TlsAndCleartext,
}

/// The TLS settings beside `VGPU_HOST`.
fn tcp_security(
    addr: SocketAddr,
    text: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
) -> Result<TcpSecurity, ConfigError> {
    let cleartext = text("VGPU_TCP_CLEARTEXT")?.is_some_and(|v| v.trim() == "1");
    let files = [
        ("VGPU_TLS_CA", text("VGPU_TLS_CA")?),
        ("VGPU_TLS_CERT", text("VGPU_TLS_CERT")?),
        ("VGPU_TLS_KEY", text("VGPU_TLS_KEY")?),
    ];
    if files.iter().all(|(_, v)| v.is_none()) {
        return if cleartext {
            Ok(TcpSecurity::Cleartext)
        } else {
            Err(ConfigError::NoTls)
        };
    }
    if cleartext {
        return Err(ConfigError::TlsAndCleartext);
    }
    if let Some((name, _)) = files.iter().find(|(_, v)| v.is_none()) {
        return Err(ConfigError::TlsIncomplete(name));
    }
    let [ca, cert, key] = files.map(|(_, v)| PathBuf::from(v.unwrap_or_default()));
    let server_name = text("VGPU_TLS_NAME")?
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| addr.ip().to_string());
    Ok(TcpSecurity::Tls {
        ca,
        cert,
        key,
        server_name,
    })
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
        (None, Some(host)) => {
            let addr: SocketAddr = host
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadHost(host.clone()))?;
            Ok(Transport::Tcp(addr, tcp_security(addr, text)?))
        }
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
            transport_from(env(&[
                ("VGPU_HOST", "10.0.0.2:7300"),
                ("VGPU_TCP_CLEARTEXT", "1")
            ])),
            Ok(Transport::Tcp(
                "10.0.0.2:7300".parse().unwrap(),
                TcpSecurity::Cleartext
            ))
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

    #[test]
    fn tcp_needs_tls_settings_or_the_cleartext_flag() {
        let host = ("VGPU_HOST", "10.0.0.2:7300");
        let tls = [
            ("VGPU_TLS_CA", "/etc/vgpu/ca.pem"),
            ("VGPU_TLS_CERT", "/etc/vgpu/client.pem"),
            ("VGPU_TLS_KEY", "/etc/vgpu/client.key"),
        ];
        assert_eq!(transport_from(env(&[host])), Err(ConfigError::NoTls));
        assert_eq!(
            transport_from(env(&[host, ("VGPU_TCP_CLEARTEXT", "yes")])),
            Err(ConfigError::NoTls),
            "only 1 turns clear text on"
        );
        let want = |name: &str| {
            Ok(Transport::Tcp(
                "10.0.0.2:7300".parse().unwrap(),
                TcpSecurity::Tls {
                    ca: "/etc/vgpu/ca.pem".into(),
                    cert: "/etc/vgpu/client.pem".into(),
                    key: "/etc/vgpu/client.key".into(),
                    server_name: name.into(),
                },
            ))
        };
        assert_eq!(
            transport_from(env(&[host, tls[0], tls[1], tls[2]])),
            want("10.0.0.2")
        );
        assert_eq!(
            transport_from(env(&[
                host,
                tls[0],
                tls[1],
                tls[2],
                ("VGPU_TLS_NAME", "gpu-box")
            ])),
            want("gpu-box")
        );
        assert_eq!(
            transport_from(env(&[host, tls[0], tls[2]])),
            Err(ConfigError::TlsIncomplete("VGPU_TLS_CERT"))
        );
        assert_eq!(
            transport_from(env(&[
                host,
                tls[0],
                tls[1],
                tls[2],
                ("VGPU_TCP_CLEARTEXT", "1")
            ])),
            Err(ConfigError::TlsAndCleartext)
        );
    }
}
