//! `vgpuctl host tls-init DIR`: the TLS material for `vgpu-host --listen` (issue 11): a CA, a
//! host certificate naming the addresses guests reach the host by, and one client certificate
//! for guests, all signed by the CA, every file mode 0600. Existing files are never
//! overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// Years the certificates are valid from the start of the current year.
pub const VALID_YEARS: i32 = 10;

/// The files `tls-init` writes, in the directory given.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "host.pem",
    "host.key",
    "client.pem",
    "client.key",
];

/// What `tls-init` makes.
#[derive(Debug, Clone)]
pub struct TlsInitOptions {
    /// Where the files go (created if missing).
    pub dir: PathBuf,
    /// The DNS names and IP addresses the host certificate names (guests verify the host by
    /// one of them: `VGPU_TLS_NAME`, or the address in `VGPU_HOST`).
    pub names: Vec<String>,
}

/// The names a host certificate carries by default: the loopback names and this machine's
/// host name.
pub fn default_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
    }
    names
}

fn refused(what: impl std::fmt::Display) -> Error {
    Error::Refused(format!("tls-init: {what}"))
}

/// The current year (UTC), from the clock.
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

fn validity(params: &mut CertificateParams) {
    let year = this_year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

/// Writes the six files of [`FILES`] into `options.dir`; prints what to pass to the host and to
/// guests on `out`.
///
/// # Errors
/// [`Error::Refused`] when a file already exists, a name is empty or a certificate cannot be
/// made; [`Error::Io`] when a file cannot be written.
pub fn tls_init(options: &TlsInitOptions, out: &mut dyn Write) -> Result<(), Error> {
    let dir = &options.dir;
    if options.names.is_empty() || options.names.iter().any(|n| n.trim().is_empty()) {
        return Err(refused(
            "the host certificate needs at least one non-empty name",
        ));
    }
    for name in FILES {
        if dir.join(name).exists() {
            return Err(refused(format!(
                "{} exists; nothing was written (move it away to make new material)",
                dir.join(name).display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;

    let ca_key = KeyPair::generate().map_err(refused)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(refused)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "vgpu CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca = ca.self_signed(&ca_key).map_err(refused)?;

    let leaf = |names: Vec<String>, common_name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().map_err(refused)?;
        let mut params = CertificateParams::new(names).map_err(refused)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        validity(&mut params);
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(refused)?;
        Ok::<_, Error>((cert, key))
    };
    let (host, host_key) = leaf(
        options.names.iter().map(|n| n.trim().to_owned()).collect(),
        "vgpu-host",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(
        Vec::new(),
        "vgpu guest",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    let files = [
        ("ca.pem", ca.pem()),
        ("ca.key", ca_key.serialize_pem()),
        ("host.pem", host.pem()),
        ("host.key", host_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ];
    for (name, text) in &files {
        write_private(&dir.join(name), text)?;
    }
    let p = |name: &str| dir.join(name).display().to_string();
    writeln!(
        out,
        "wrote {dir} (mode 0600): ca.pem ca.key host.pem host.key client.pem client.key\n\
         host certificate names: {names}\n\
         host:   vgpu-host --listen ADDR --tls-cert {host} --tls-key {host_key} --tls-client-ca {ca}\n\
         guests: VGPU_HOST=ADDR VGPU_TLS_CA={ca} VGPU_TLS_CERT={client} VGPU_TLS_KEY={client_key}\n\
         (copy ca.pem, client.pem and client.key to the guests; keep ca.key off the host once you \
         have made the client certificates you need)",
        dir = dir.display(),
        names = options.names.join(", "),
        host = p("host.pem"),
        host_key = p("host.key"),
        ca = p("ca.pem"),
        client = p("client.pem"),
        client_key = p("client.key"),
    )
    .ok();
    Ok(())
}

/// Creates `path` (it must not exist) with mode 0600 from the start, and writes `text`.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_six_private_files_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("vgpuctl-tls-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = TlsInitOptions {
            dir: dir.clone(),
            names: vec!["gpu-box".into(), "10.0.0.2".into()],
        };
        let mut out = Vec::new();
        tls_init(&options, &mut out).expect("tls-init");
        for name in FILES {
            let meta = std::fs::metadata(dir.join(name)).expect(name);
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            let text = std::fs::read_to_string(dir.join(name)).expect(name);
            assert!(text.starts_with("-----BEGIN "), "{name}: {text}");
        }
        let said = String::from_utf8(out).expect("utf-8");
        assert!(said.contains("--tls-client-ca"), "{said}");
        let again = tls_init(&options, &mut Vec::new());
        assert!(matches!(again, Err(Error::Refused(m)) if m.contains("exists")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_an_empty_name() {
        let options = TlsInitOptions {
            dir: std::env::temp_dir().join("vgpuctl-tls-init-unused"),
            names: vec![" ".into()],
        };
        assert!(matches!(
            tls_init(&options, &mut Vec::new()),
            Err(Error::Refused(_))
        ));
    }
}
