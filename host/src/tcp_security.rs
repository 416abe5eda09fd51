//! What TCP clients must show before a call is served (issue 11): TLS 1.3 with a client
//! certificate signed by the operator's CA (`--tls-cert`, `--tls-key`, `--tls-client-ca`),
//! optionally with the pre-shared key challenge inside the session (`--tcp-key`); or, only when
//! `--tcp-cleartext` says so, clear text with the key or (`--tcp-insecure`) with nothing.

use std::path::PathBuf;
use std::sync::Arc;

use transport::{StreamKey, TlsServerConfig};

use crate::cli::ServeArgs;

/// How a listener's connections are secured.
#[derive(Debug, Clone)]
pub struct TcpSecurity {
    /// The TLS settings (`None`: clear text, `--tcp-cleartext`).
    pub tls: Option<Arc<TlsServerConfig>>,
    /// The key clients answer the challenge with (`None`: no challenge).
    pub key: Option<Arc<StreamKey>>,
    /// The key file, for the log line.
    key_path: Option<PathBuf>,
}

/// Why the TCP settings cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// Neither TLS material nor the clear-text flag.
    #[error(
        "--listen needs TLS: --tls-cert, --tls-key and --tls-client-ca (make them with \
         `vgpuctl host tls-init DIR`); or --tcp-cleartext with --tcp-key FILE (or \
         --tcp-insecure) on a trusted private network"
    )]
    NoTls,
    /// Clear text without a key and without `--tcp-insecure`.
    #[error(
        "--tcp-cleartext needs --tcp-key FILE (clients prove they hold the key), or \
         --tcp-insecure on a trusted private network"
    )]
    NoKey,
    /// The key file was refused.
    #[error("{0}")]
    Key(#[from] transport::KeyError),
    /// The TLS material was refused.
    #[error("{0}")]
    Tls(#[from] transport::TlsConfigError),
}

impl TcpSecurity {
    /// Reads the TCP settings of `args` (`None` when nothing listens on TCP).
    ///
    /// # Errors
    /// [`SecurityError`]: a combination that would serve clients unauthenticated or in clear
    /// text without being asked to, or material that cannot be read.
    pub fn from_args(args: &ServeArgs) -> Result<Option<Self>, SecurityError> {
        if args.listen.is_empty() {
            return Ok(None);
        }
        let tls = match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(Arc::new(TlsServerConfig::load(cert, key, ca)?))
            }
            // clap requires all three together.
            _ if args.tcp_cleartext => None,
            _ => return Err(SecurityError::NoTls),
        };
        let key = match &args.tcp_key {
            Some(path) => Some(Arc::new(StreamKey::from_file(path)?)),
            None if tls.is_none() && !args.tcp_insecure => return Err(SecurityError::NoKey),
            None => None,
        };
        Ok(Some(TcpSecurity {
            tls,
            key,
            key_path: args.tcp_key.clone(),
        }))
    }

    /// Logs how the listener at `addr` serves its clients: info with TLS, a warning in clear
    /// text.
    pub fn log_listening(&self, addr: std::net::SocketAddr) {
        let key = self.key_path.as_ref().map(|p| p.display().to_string());
        match (&self.tls, key) {
            (Some(_), None) => tracing::info!(
                "listening on tcp {addr} (TLS 1.3; clients show a certificate from the client CA)"
            ),
            (Some(_), Some(key)) => tracing::info!(
                "listening on tcp {addr} (TLS 1.3; clients show a certificate from the client \
                 CA and prove they hold the key in {key})"
            ),
            (None, Some(key)) => tracing::warn!(
                "listening on tcp {addr} in CLEAR TEXT (--tcp-cleartext): calls, data and \
                 client tokens cross the network unencrypted; clients prove they hold the key \
                 in {key}; keep it on a private network"
            ),
            (None, None) => tracing::warn!(
                "listening on tcp {addr} in CLEAR TEXT without authentication (--tcp-cleartext \
                 --tcp-insecure): keep it on a private network"
            ),
        }
    }
}
