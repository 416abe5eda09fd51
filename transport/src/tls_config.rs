//! TLS material and settings (issue 11): the host's certificate and key and the CA its clients'
//! certificates must chain to; the guest's CA for the host, its own certificate and key, and the
//! name the host's certificate must carry. Read from PEM files; private keys must be readable by
//! their owner only, as the pre-shared key (`stream_key.rs`).
//!
//! Both ends speak TLS 1.3 only, with the one suite TLS_CHACHA20_POLY1305_SHA256 (why:
//! `tls_record.rs`) over *ring*'s primitives, require the peer's certificate, keep no session
//! tickets or resumption state, and let the traffic keys be extracted, which the record layer
//! (`tls_record.rs`) continues with.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS material or settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A private key file that group or others may read or write.
    #[error(
        "the private key {path} is accessible to group or others (mode {mode:o}); chmod 600 it"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A file without the PEM items expected (no certificate, no private key, bad PEM).
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the material (e.g. a key that does not match the certificate).
    #[error("TLS settings refused: {0}")]
    Settings(String),
    /// The name to verify the host by is neither a DNS name nor an IP address.
    #[error("{0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
}

/// The crypto provider of both ends: *ring*, TLS 1.3 ChaCha20-Poly1305 only.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..rustls::crypto::ring::default_provider()
    })
}

fn settings(e: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError::Settings(e.to_string())
}

/// Reads a file; with `private`, refuses one that group or others may access.
fn read_file(path: &Path, private: bool) -> Result<Vec<u8>, TlsConfigError> {
    let shown = path.display().to_string();
    let read = |source| TlsConfigError::Read {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(TlsConfigError::Exposed { path: shown, mode });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read)?;
    Ok(bytes)
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = |what: String| TlsConfigError::Pem {
        path: path.display().to_string(),
        what,
    };
    let bytes = read_file(path, false)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE in the file".to_owned()));
    }
    Ok(certs)
}

/// The private key of a PEM file that only its owner may read.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let bytes = read_file(path, true)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsConfigError::Pem {
        path: path.display().to_string(),
        what: format!("no usable private key: {e}"),
    })
}

/// A root store of every certificate in a PEM file.
fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store.add(cert).map_err(|e| TlsConfigError::Pem {
            path: path.display().to_string(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// The host's TLS settings: its certificate chain and key, and the CA that signs its clients'
/// certificates (a client without one is refused).
#[derive(Debug, Clone)]
pub struct TlsServerConfig(pub(crate) Arc<ServerConfig>);

impl TlsServerConfig {
    /// Reads the host's certificate chain (`cert`, PEM), its private key (`key`, PEM, mode 0600
    /// or stricter) and the client CA (`client_ca`, PEM).
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, TlsConfigError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider.clone())
                .build()
                .map_err(settings)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(settings)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates(cert)?, private_key(key)?)
            .map_err(settings)?;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.enable_secret_extraction = true;
        Ok(TlsServerConfig(Arc::new(config)))
    }
}

/// The guest's TLS settings: the CA the host's certificate must chain to, the name it must
/// carry, and the guest's own certificate and key.
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

impl TlsClientConfig {
    /// Reads the CA (`ca`, PEM), the client's certificate chain (`cert`, PEM) and private key
    /// (`key`, PEM, mode 0600 or stricter); `server_name` is the DNS name or IP address the
    /// host's certificate must name.
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file or setting and what is wrong with it.
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<Self, TlsConfigError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsConfigError::ServerName(server_name.to_owned()))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(settings)?
            .with_root_certificates(roots(ca)?)
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(settings)?;
        config.resumption = Resumption::disabled();
        config.enable_secret_extraction = true;
        Ok(TlsClientConfig {
            config: Arc::new(config),
            server_name,
        })
    }
}
