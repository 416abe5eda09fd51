//! TLS over TCP end to end: material made with rcgen, the handshake, the record layer against
//! rustls's own, refusals, and the hand-over of a session to another owner.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::stream_io::{send_to_fd, StreamIo};
use crate::tls_config::{TlsClientConfig, TlsServerConfig};
use crate::tls_record::{SessionKeys, TlsStream};
use crate::{
    ServerTransport, StreamKey, TcpClient, TcpServer, TlsClient, Transport, TransportError,
};

/// A directory of PEM files: a CA, a host certificate for 127.0.0.1, a client certificate
/// signed by the CA, and a self-signed client certificate.
struct Material {
    dir: PathBuf,
}

impl Material {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vgpu-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).expect("ca");
        let leaf = |names: Vec<String>, usage| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            (params, key)
        };
        let (host, host_key) = leaf(
            vec!["127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let host = host.signed_by(&host_key, &ca, &ca_key).expect("host");
        let (client, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth);
        let client = client.signed_by(&client_key, &ca, &ca_key).expect("client");
        let (rogue, rogue_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue = rogue.self_signed(&rogue_key).expect("rogue");
        let write = |name: &str, text: String, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        write("ca.pem", ca.pem(), 0o644);
        write("host.pem", host.pem(), 0o644);
        write("host.key", host_key.serialize_pem(), 0o600);
        write("client.pem", client.pem(), 0o644);
        write("client.key", client_key.serialize_pem(), 0o600);
        write("rogue.pem", rogue.pem(), 0o644);
        write("rogue.key", rogue_key.serialize_pem(), 0o600);
        Material { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server(&self) -> TlsServerConfig {
        TlsServerConfig::load(
            &self.path("host.pem"),
            &self.path("host.key"),
            &self.path("ca.pem"),
        )
        .expect("server config")
    }

    fn client_as(&self, who: &str) -> TlsClientConfig {
        TlsClientConfig::load(
            &self.path("ca.pem"),
            &self.path(&format!("{who}.pem")),
            &self.path(&format!("{who}.key")),
            "127.0.0.1",
        )
        .expect("client config")
    }

    /// A client that shows no certificate at all.
    fn anonymous_client(&self) -> TlsClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.path("ca.pem")).expect("ca");
        for cert in
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                &pem,
            )
        {
            roots.add(cert.expect("pem")).expect("root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.enable_secret_extraction = true;
        TlsClientConfig {
            config: Arc::new(config),
            server_name: "127.0.0.1".try_into().expect("name"),
        }
    }
}

impl Drop for Material {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves one connection on a thread: handshake (TLS with `key`), then echoes requests doubled
/// until the client leaves. Returns the server's handshake result.
fn serve_one(
    server: TcpServer,
    tls: TlsServerConfig,
    key: Option<StreamKey>,
) -> std::thread::JoinHandle<Result<(), TransportError>> {
    std::thread::spawn(move || {
        let mut served = server.accept_tls(&tls, key.as_ref())?;
        let mut request = Vec::new();
        loop {
            match served.recv(&mut request) {
                Ok(()) => served.reply(&request.repeat(2))?,
                Err(TransportError::PeerGone(_) | TransportError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
}

fn bound() -> (TcpServer, std::net::SocketAddr) {
    let server = TcpServer::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    (server, addr)
}

#[test]
fn a_client_with_a_certificate_from_the_ca_is_served_small_and_bulk() {
    let material = Material::new("served");
    let (server, addr) = bound();
    let served = serve_one(server, material.server(), None);
    let mut client =
        TlsClient::connect_tls(addr, &material.client_as("client"), None).expect("connect");
    let mut response = Vec::new();
    client.call(b"ping", &mut response).expect("call");
    assert_eq!(response, b"pingping");
    // Many records each way, and a length that is not a multiple of the record size.
    let bulk: Vec<u8> = (0..3 * crate::TLS_MAX_PLAINTEXT + 12345)
        .map(|i| (i % 251) as u8)
        .collect();
    client.call(&bulk, &mut response).expect("bulk call");
    assert_eq!(response.len(), 2 * bulk.len());
    assert_eq!(&response[..bulk.len()], &bulk[..]);
    assert_eq!(&response[bulk.len()..], &bulk[..]);
    drop(client);
    served.join().expect("thread").expect("served");
}

#[test]
fn the_pre_shared_key_still_works_inside_tls() {
    let material = Material::new("psk");
    let key = || StreamKey::from_bytes(b"the host's sixteen+ byte key").expect("key");
    let (server, addr) = bound();
    let served = serve_one(server, material.server(), Some(key()));
    let tls = material.client_as("client");
    let mut client = TlsClient::connect_tls(addr, &tls, Some(&key())).expect("connect");
    let mut response = Vec::new();
    client.call(b"k", &mut response).expect("call");
    assert_eq!(response, b"kk");
    drop(client);
    served.join().expect("thread").expect("served");

    let (server, addr) = bound();
    let refused = serve_one(server, material.server(), Some(key()));
    assert!(
        TlsClient::connect_tls(addr, &tls, None).is_err(),
        "no key inside TLS"
    );
    assert!(refused.join().expect("thread").is_err());
}

/// A way to connect that the host should refuse.
type Connect<'a> = dyn Fn(std::net::SocketAddr) -> Result<(), TransportError> + 'a;

#[test]
fn clients_without_a_good_certificate_or_tls_are_refused() {
    let material = Material::new("refused");
    let cases: [(&str, Box<Connect>); 3] = [
        (
            "self-signed",
            Box::new(|addr| {
                TlsClient::connect_tls(addr, &material.client_as("rogue"), None).map(drop)
            }),
        ),
        (
            "no certificate",
            Box::new(|addr| {
                TlsClient::connect_tls(addr, &material.anonymous_client(), None).map(drop)
            }),
        ),
        (
            "clear text",
            Box::new(|addr| TcpClient::connect(addr).map(drop)),
        ),
    ];
    for (what, connect) in cases {
        let (server, addr) = bound();
        let served = serve_one(server, material.server(), None);
        let client = connect(addr);
        let server = served.join().expect("thread");
        assert!(
            matches!(server, Err(TransportError::Tls(_))),
            "{what}: the server said {server:?}"
        );
        // (A TLS 1.3 client without a certificate finishes its side of the handshake before
        // the host's refusal arrives; it learns of it when it reads the stream handshake's
        // answer: the alert, or a reset.)
        assert!(client.is_err(), "{what}: the client was not told");
    }
}

#[test]
fn a_tls_client_is_refused_by_a_clear_text_server() {
    let material = Material::new("cleartext-host");
    let (server, addr) = bound();
    let served = std::thread::spawn(move || server.accept().map(drop));
    let client = TlsClient::connect_tls(addr, &material.client_as("client"), None);
    assert!(client.is_err());
    assert!(matches!(
        served.join().expect("thread"),
        Err(TransportError::BadHandshake(_))
    ));
}

/// A TLS session from a real handshake over loopback: (client stream, server stream).
fn session_pair(material: &Material) -> (TlsStream, TlsStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = material.server();
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        crate::tls_handshake::accept(socket, &tls)
            .expect("server handshake")
            .0
    });
    let client = crate::tls_handshake::connect(
        TcpStream::connect(addr).expect("connect"),
        &material.client_as("client"),
    )
    .expect("client handshake");
    (client, server.join().expect("thread"))
}

#[test]
fn a_session_handed_to_another_owner_continues() {
    let material = Material::new("handover");
    let (mut client, server) = session_pair(&material);
    client.send_all(b"first").expect("send");
    let mut server = server;
    let mut got = [0u8; 5];
    server.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"first");
    let (socket, keys) = server.into_parts().expect("nothing buffered");
    let keys = SessionKeys::decode(&keys.encode()).expect("keys travel as text");
    assert!(
        !format!("{keys:?}").contains(&keys.encode()[4..20]),
        "Debug hides the keys"
    );
    let mut resumed = TlsStream::resume(socket, keys);
    client.send_all(b"second").expect("send");
    let mut got = [0u8; 6];
    resumed.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"second");
    resumed.send_all(b"back").expect("send");
    let mut got = [0u8; 4];
    client.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"back");
    // Unread bytes would be lost in a hand-over: refused.
    client.send_all(b"early").expect("send");
    let mut one = [0u8; 1];
    resumed.read_exact(&mut one).expect("read");
    assert!(resumed.into_parts().is_err());
    for bad in ["", "1:00:00 2:00:00", "x:y:z a:b:c"] {
        assert!(SessionKeys::decode(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_tampered_record_is_refused() {
    let material = Material::new("tamper");
    let (client, mut server) = session_pair(&material);
    let (socket, keys) = client.into_parts().expect("parts");
    // Seal a record with the client's keys on a second stream over a socket pair, flip a byte
    // of it, and send it down the real socket.
    let (a, mut b) = loopback_pair();
    let mut sealer = TlsStream::resume(a, keys);
    sealer.send_all(b"honest bytes").expect("seal");
    let mut record = vec![0u8; 5 + 12 + 1 + 16];
    b.read_exact(&mut record).expect("record");
    record[9] ^= 1;
    send_to_fd(&socket, &record).expect("send");
    let mut buf = [0u8; 12];
    let err = server.read_exact(&mut buf).expect_err("tampered");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn records_other_than_data_end_the_session() {
    use rustls::ContentType;
    let material = Material::new("typed");
    let mut buf = [0u8; 4];
    // close_notify: an orderly end of stream.
    let (mut client, mut server) = session_pair(&material);
    client
        .send_typed(ContentType::Alert, &[1, 0])
        .expect("send");
    assert_eq!(server.read(&mut buf).expect("end"), 0);
    assert_eq!(server.read(&mut buf).expect("still the end"), 0);
    // Another alert: a refusal, named.
    let (mut client, mut server) = session_pair(&material);
    client
        .send_typed(ContentType::Alert, &[2, 116])
        .expect("send");
    let err = server.read(&mut buf).expect_err("an alert");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // A handshake message (a key update) after the handshake: not supported.
    let (mut client, mut server) = session_pair(&material);
    client
        .send_typed(ContentType::Handshake, &[24, 0, 0, 1, 0])
        .expect("send");
    let err = server.read(&mut buf).expect_err("a key update");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    (a, b)
}

#[test]
fn a_rustls_peer_reads_and_writes_these_records() {
    let material = Material::new("interop");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = material.server();
    let server = std::thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let (mut session, fingerprint) =
            crate::tls_handshake::accept(socket, &tls).expect("handshake");
        assert_ne!(fingerprint, [0; 32]);
        let mut got = vec![0u8; 100_000];
        session.read_exact(&mut got).expect("read");
        session.send_all(&got).expect("echo");
        let mut end = [0u8; 1];
        assert_eq!(
            session.read(&mut end).expect("close_notify"),
            0,
            "an orderly end"
        );
    });
    let client = material.client_as("client");
    let conn = rustls::ClientConnection::new(client.config.clone(), client.server_name.clone())
        .expect("conn");
    let mut rustls_stream =
        rustls::StreamOwned::new(conn, TcpStream::connect(addr).expect("connect"));
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    rustls_stream.write_all(&sent).expect("write");
    rustls_stream.flush().expect("flush");
    let mut echoed = vec![0u8; sent.len()];
    rustls_stream.read_exact(&mut echoed).expect("read");
    assert_eq!(echoed, sent);
    rustls_stream.conn.send_close_notify();
    rustls_stream.flush().expect("close");
    server.join().expect("server");
}

#[test]
fn private_keys_must_be_private() {
    let material = Material::new("modes");
    std::fs::set_permissions(
        material.path("host.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let refused = TlsServerConfig::load(
        &material.path("host.pem"),
        &material.path("host.key"),
        &material.path("ca.pem"),
    );
    assert!(
        matches!(refused, Err(crate::TlsConfigError::Exposed { .. })),
        "{refused:?}"
    );
    let not_a_cert = TlsServerConfig::load(
        &material.path("host.key"),
        &material.path("client.key"),
        &material.path("ca.pem"),
    );
    assert!(
        matches!(not_a_cert, Err(crate::TlsConfigError::Pem { .. })),
        "{not_a_cert:?}"
    );
}
