//! `vgpu-host --listen`: guests reach the host over TCP. End to end on this machine: the real
//! shim, preloaded into a C program with `VGPU_HOST=127.0.0.1:PORT`, talks to the real
//! `vgpu-host` serving the fake driver (tests/fake_driver/libcuda.c).
//!
//! Covers: calls from two threads of one process (one worker) and from two processes (two
//! workers); a SIGKILLed client's worker gone within the grace period plus a bound; a TCP
//! client beside a region client; silent, garbage, clear-text and certificate-less or
//! self-signed TLS connections closed with a log line while the supervisor keeps serving (the
//! test hosts serve TLS 1.3 with material from `vgpuctl host tls-init`, and the key challenge
//! inside it); a clear-text host only when told; an address that cannot be bound.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use support::host::{command, HostBuilder};
use support::procs::{gone_within, running};
use support::{c_program, fake_driver, run_client, Host};
use transport::StreamIo;

/// The grace period the tests give TCP workers (`--tcp-grace-ms`).
const GRACE: Duration = Duration::from_millis(300);
/// How long past the grace period a worker may take to be gone.
const EXIT_BOUND: Duration = Duration::from_secs(2);

/// Two threads each allocate, copy a pattern there and back, compare and free; the main
/// thread initialises. With an argument, the program then waits for a line on stdin, so the
/// test can look at its worker (and kill it).
const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
typedef unsigned long long dptr;
static int (*init_fn)(unsigned);
static int (*count_fn)(int *);
static int (*alloc_fn)(dptr *, size_t);
static int (*htod_fn)(dptr, const void *, size_t);
static int (*dtoh_fn)(void *, dptr, size_t);
static int (*free_fn)(dptr);
static void *work(void *arg) {
    long id = (long)arg;
    unsigned char in[4096], out[4096];
    for (int i = 0; i < 4096; i++) in[i] = (unsigned char)(i * 7 + id);
    memset(out, 0, sizeof out);
    int n = -1;
    dptr d = 0;
    int r1 = count_fn(&n);
    int r2 = alloc_fn(&d, sizeof in);
    int r3 = htod_fn(d, in, sizeof in);
    int r4 = dtoh_fn(out, d, sizeof out);
    int r5 = free_fn(d);
    printf("thread %ld count=%d rc=%d,%d,%d,%d,%d same=%d\n", id, n, r1, r2, r3, r4, r5,
           memcmp(in, out, sizeof in) == 0);
    fflush(stdout);
    return 0;
}
int main(int argc, char **argv) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("no libcuda: %s\n", dlerror()); return 2; }
    init_fn = (int (*)(unsigned))dlsym(cuda, "cuInit");
    count_fn = (int (*)(int *))dlsym(cuda, "cuDeviceGetCount");
    alloc_fn = (int (*)(dptr *, size_t))dlsym(cuda, "cuMemAlloc_v2");
    htod_fn = (int (*)(dptr, const void *, size_t))dlsym(cuda, "cuMemcpyHtoD_v2");
    dtoh_fn = (int (*)(void *, dptr, size_t))dlsym(cuda, "cuMemcpyDtoH_v2");
    free_fn = (int (*)(dptr))dlsym(cuda, "cuMemFree_v2");
    printf("pid %d init rc=%d\n", (int)getpid(), init_fn(0));
    fflush(stdout);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], 0, work, (void *)(i + 1));
    for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
    printf("done\n");
    fflush(stdout);
    if (argc > 1) {
        char line[16];
        (void)!fgets(line, sizeof line, stdin); /* a line or end of file */
    }
    return 0;
}
"#;

fn program() -> PathBuf {
    c_program("two_threads", PROGRAM, &["-ldl", "-pthread"])
}

/// Starts `host` listening on a free local port, with debug logs and the test's grace period.
fn start_listening(host: HostBuilder, extra: &[&str]) -> Host {
    host.args([
        "--listen",
        "127.0.0.1:0",
        "--log",
        "debug",
        "--tcp-grace-ms",
    ])
    .args([GRACE.as_millis().to_string()])
    .args(extra.iter().copied())
    .start()
}

/// A run of [`PROGRAM`] that waits on stdin after its calls.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Starts `cmd` (a guest command for [`program`]) so that it holds after its calls.
    fn start(mut cmd: Command) -> Client {
        let mut child = cmd
            .arg("hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start client");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Client {
            child,
            stdin,
            stdout,
        }
    }

    fn tcp(host: &Host) -> Client {
        Client::start(host.tcp_client(&program()))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program's output up to its `done` line.
    fn until_done(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("client stdout");
            assert!(n > 0, "client ended early: {all}");
            all.push_str(&line);
            if line.trim_end() == "done" {
                return all;
            }
        }
    }

    /// Lets the program exit and returns its status.
    fn release(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait client")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the program's output: cuInit and both threads' calls succeeded, with the data back.
fn assert_served(out: &str, pid: u32) {
    assert!(out.contains(&format!("pid {pid} init rc=0")), "{out}");
    for id in 1..=2 {
        assert!(
            out.contains(&format!("thread {id} count=1 rc=0,0,0,0,0 same=1")),
            "thread {id}: {out}"
        );
    }
}

#[test]
fn tcp_clients_get_one_worker_per_process_and_a_killed_one_is_cleaned_up() {
    let mut host = start_listening(Host::without_region(), &[]);
    let mut a = Client::tcp(&host);
    let mut b = Client::tcp(&host);
    let out_a = a.until_done();
    let out_b = b.until_done();
    assert_served(&out_a, a.pid());
    assert_served(&out_b, b.pid());
    // Each process has exactly one worker, of its own.
    let wa = host.worker_of(a.pid());
    let wb = host.worker_of(b.pid());
    assert_ne!(wa, wb);
    // The main thread and both worker threads of A came over TCP, each logged with its peer,
    // and all reached A's worker.
    let tag_a = format!("pid={}", a.pid());
    let tag_wa = format!("worker={wa}");
    host.log_line(&["tcp connection", "peer=127.0.0.1:", &tag_a]);
    assert_eq!(
        host.count_lines_awaiting(&["tcp connection", &tag_a, &tag_wa], 3),
        3,
        "A's three connections"
    );
    // SIGKILL: the kernel closes A's sockets; its worker exits after the grace period.
    let _ = a.child.kill();
    let _ = a.child.wait();
    gone_within(wa, GRACE + EXIT_BOUND, "the killed client's worker");
    assert!(running(wb), "the other client's worker ended too");
    // B leaves normally: its worker follows once its last connection closed.
    assert!(b.release().success());
    gone_within(wb, GRACE + EXIT_BOUND, "the finished client's worker");
    assert!(host.alive());
    host.assert_no_panic();
}

#[test]
fn a_tcp_client_and_a_region_client_are_served_side_by_side() {
    let mut host = start_listening(Host::on_region("tcptest"), &["--prewarm", "false"]);
    let mut tcp = Client::tcp(&host);
    let mut shm = Client::start(host.client(&program()));
    let out_tcp = tcp.until_done();
    let out_shm = shm.until_done();
    assert_served(&out_tcp, tcp.pid());
    assert_served(&out_shm, shm.pid());
    let w_tcp = host.worker_of(tcp.pid());
    let w_shm = host.worker_of(shm.pid());
    assert_ne!(w_tcp, w_shm);
    assert_eq!(
        host.count_lines(&["tcp connection", &format!("pid={}", shm.pid())]),
        0,
        "the region client came over TCP"
    );
    assert!(tcp.release().success());
    assert!(shm.release().success());
    gone_within(w_tcp, GRACE + EXIT_BOUND, "the TCP client's worker");
    gone_within(w_shm, EXIT_BOUND, "the region client's worker");
    assert!(host.alive());
    host.assert_no_panic();
}

#[test]
fn silent_garbage_and_hostile_connections_are_closed_and_logged() {
    let mut host = start_listening(Host::without_region(), &[]);
    // A peer that connects and says nothing does not hold up the next client: a real client
    // completes its handshakes while the silent one is still waiting.
    let mut silent = TcpStream::connect(host.tcp()).expect("connect");
    let silent_peer = silent.local_addr().expect("addr").to_string();
    let mut client = host.tcp_connect();
    silent.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    assert!(
        matches!(silent.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent connection was closed before the client's handshake finished"
    );
    // It is closed after the handshake timeout, with one log line.
    silent.set_nonblocking(false).expect("blocking");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(silent.read(&mut buf).expect("closed"), 0);
    host.log_line(&["tcp connection closed", &silent_peer, "no handshake within"]);

    // Garbage, or a clear-text vgpu hello, instead of a TLS handshake: closed, one log line.
    for (what, bytes) in [
        ("garbage", vec![0x5a; 40]),
        ("clear text", clear_hello(4241)),
    ] {
        let mut peer = TcpStream::connect(host.tcp()).expect("connect");
        let shown = peer.local_addr().expect("addr").to_string();
        peer.write_all(&bytes).expect("write");
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert_closed(&mut peer, what);
        host.log_line(&["tcp connection closed", &shown, "TLS handshake failed"]);
    }

    // A TLS client with no certificate, or a self-signed one: refused in the handshake,
    // closed, one log line each.
    let ca = host.tls_dir().expect("tls").join("ca.pem");
    for (what, why) in [
        (None, "no certificates"),
        (Some(self_signed()), "UnknownIssuer"),
    ] {
        let shown = rustls_client_refused(host.tcp(), &ca, what);
        host.log_line(&["tcp connection closed", &shown, "TLS handshake failed", why]);
    }

    // A valid handshake followed by a garbage frame: an error answer, not a crash.
    let mut response = Vec::new();
    client
        .call(&[0xff; 3], &mut response)
        .expect("an answer to a garbage frame");
    assert!(!response.is_empty());
    // Valid handshakes (TLS, then the stream's with the key) inside the session, then a frame
    // length of 2^64-1 and a few bytes, then the peer leaves: the worker cuts it off at the
    // length (nothing allocated for it), and the host stays.
    let mut hostile = transport::tls_connect(
        TcpStream::connect(host.tcp()).expect("connect"),
        &host.tls_client_config(),
    )
    .expect("tls handshake");
    let hello = clear_hello(4242);
    hostile.send_all(&hello).expect("handshake");
    let mut ack = [0u8; 16];
    hostile.read_exact(&mut ack).expect("ack");
    assert_eq!(
        &ack[12..16],
        &2u32.to_le_bytes(),
        "the host asks for the key"
    );
    let mut challenge = [0u8; transport::CHALLENGE_LEN];
    hostile.read_exact(&mut challenge).expect("challenge");
    let key = transport::StreamKey::from_file(host.tcp_key().expect("a key")).expect("key");
    hostile
        .send_all(&key.answer(&challenge, &hello))
        .expect("answer");
    let mut verdict = [0u8; 4];
    hostile.read_exact(&mut verdict).expect("verdict");
    assert_eq!(verdict, [0, 0, 0, 0], "a valid handshake was refused");
    let mut admission = [0u8; 28];
    hostile.read_exact(&mut admission).expect("admission");
    assert_eq!(
        &admission[0..4],
        &1u32.to_le_bytes(),
        "admitted as a new client"
    );
    assert_ne!(
        &admission[12..28],
        &[0u8; 16],
        "with a credential the host minted"
    );
    hostile.send_all(&u64::MAX.to_le_bytes()).expect("length");
    hostile.send_all(&[7; 1000]).expect("some bytes");
    let hostile_worker = host.worker_of(4242);
    drop(hostile);
    gone_within(
        hostile_worker,
        GRACE + EXIT_BOUND,
        "the hostile client's worker",
    );
    drop(client);

    // The supervisor kept serving all along: a real client is served now.
    serves_a_new_client(&mut host);
}

#[test]
fn a_clear_text_host_refuses_garbage_with_a_status_and_serves_clients_that_say_so() {
    let mut host = start_listening(Host::without_region(), &["--tcp-cleartext"]);
    host.log_line(&["CLEAR TEXT", "--tcp-cleartext"]);
    let mut garbage = TcpStream::connect(host.tcp()).expect("connect");
    let garbage_peer = garbage.local_addr().expect("addr").to_string();
    garbage.write_all(&[0x5a; 40]).expect("write garbage");
    let mut ack = [0u8; 16];
    garbage.read_exact(&mut ack).expect("refusal");
    assert_eq!(&ack[0..8], b"VGPUTCP1");
    assert_ne!(&ack[12..16], &[0, 0, 0, 0], "garbage accepted");
    assert_closed(&mut garbage, "garbage");
    host.log_line(&["tcp connection closed", &garbage_peer, "bad handshake"]);
    // A guest without VGPU_TCP_CLEARTEXT=1 does not speak clear text.
    let mut unasked = host.tcp_client(&program());
    unasked.env_remove("VGPU_TCP_CLEARTEXT");
    let out = run_client(&mut unasked);
    assert!(!out.stdout.contains("init rc=0"), "{}", out.stdout);
    assert!(
        out.stderr.contains("VGPU_TCP_CLEARTEXT=1"),
        "{}",
        out.stderr
    );
    serves_a_new_client(&mut host);
}

/// A vgpu stream hello (`transport/src/stream.rs`) for guest pid `pid`.
fn clear_hello(pid: u32) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(b"VGPUTCP1");
    hello.extend_from_slice(&transport::STREAM_VERSION.to_le_bytes());
    hello.extend_from_slice(&pid.to_le_bytes());
    hello.extend_from_slice(&(pid + 1).to_le_bytes());
    hello.extend_from_slice(&0u32.to_le_bytes());
    hello.extend_from_slice(&[0u8; transport::CREDENTIAL_LEN]);
    hello
}

/// Asserts that the host closed `peer`: end of file, a reset (bytes left unread), or for a TLS
/// peer an alert followed by the end.
fn assert_closed(peer: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {} // an alert or a refusal status before the end
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: connection left open: {e}"),
        }
    }
}

/// A self-signed client certificate and its key (PEM).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// Connects with rustls's own client, trusting `ca`, showing `identity` (or no certificate),
/// sends a stream hello and asserts the host ends the connection; returns the local address.
fn rustls_client_refused(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    identity: Option<(String, String)>,
) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    let socket = TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let shown = socket.local_addr().expect("addr").to_string();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        "127.0.0.1".try_into().expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, socket);
    // TLS 1.3: the client's side of the handshake may finish before the host's refusal
    // arrives, so the refusal shows at the first read at the latest.
    let _ = tls.write_all(&clear_hello(4240)).and_then(|()| tls.flush());
    let mut ack = [0u8; 16];
    match tls.read(&mut ack) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("a refused client read {n} bytes: {:?}", &ack[..n]),
    }
    shown
}

/// A new client process is served in full and leaves normally; the host is up, without panics.
fn serves_a_new_client(host: &mut Host) {
    let mut client = Client::tcp(host);
    let out = client.until_done();
    assert_served(&out, client.pid());
    assert!(client.release().success());
    assert!(host.alive());
    host.assert_no_panic();
}

#[test]
fn an_address_in_use_is_one_line_and_exit_6() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = command()
        .arg("--driver")
        .arg(fake_driver())
        .args([
            "--listen",
            &addr,
            "--prewarm",
            "false",
            "--tcp-cleartext",
            "--tcp-insecure",
        ])
        .output()
        .expect("run vgpu-host");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("vgpu-host:"))
        .collect();
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// A copy larger than one message's chunk travels as several messages, in order: the transport
/// carries at most `transport::MAX_MESSAGE_LEN`, and the shim sends copies in 256 MiB chunks.
const BIG_COPY: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef unsigned long long dptr;
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(cuda, "cuInit");
    int (*alloc)(dptr *, size_t) = (int (*)(dptr *, size_t))dlsym(cuda, "cuMemAlloc_v2");
    int (*htod)(dptr, const void *, size_t, void *) =
        (int (*)(dptr, const void *, size_t, void *))dlsym(cuda, "cuMemcpyHtoDAsync_v2");
    int (*dtoh)(void *, dptr, size_t, void *) =
        (int (*)(void *, dptr, size_t, void *))dlsym(cuda, "cuMemcpyDtoHAsync_v2");
    int (*sync)(void *) = (int (*)(void *))dlsym(cuda, "cuStreamSynchronize");
    size_t n = (size_t)(256 << 20) + 12345;
    unsigned char *in = malloc(n), *out = calloc(n, 1);
    if (!in || !out) return 3;
    for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 131 + (i >> 20));
    dptr d = 0;
    int r0 = init(0), r1 = alloc(&d, n), r2 = htod(d, in, n, 0), r3 = dtoh(out, d, n, 0);
    int r4 = sync(0);
    printf("rc=%d,%d,%d,%d,%d same=%d\n", r0, r1, r2, r3, r4, memcmp(in, out, n) == 0);
    return 0;
}
"#;

#[test]
fn a_copy_larger_than_a_chunk_goes_as_several_messages_in_order() {
    let host = start_listening(Host::without_region().log_driver_calls(), &[]);
    let program = c_program("big_copy", BIG_COPY, &["-ldl"]);
    let out = run_client(&mut host.tcp_client(&program));
    assert_eq!(out.stdout.trim(), "rc=0,0,0,0,0 same=1", "{}", out.stderr);
    let log = host.driver_log();
    let sizes = |what: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.starts_with(what))
            .filter_map(|l| l.rsplit_once("len=").and_then(|(_, n)| n.parse().ok()))
            .collect()
    };
    let chunks = vec![256 << 20, 12345];
    assert_eq!(sizes("cuMemcpyHtoDAsync_v2"), chunks, "{log}");
    assert_eq!(sizes("cuMemcpyDtoHAsync_v2"), chunks, "{log}");
    // The supervisor and the worker that served the copy are not dumpable (read back).
    assert!(
        host.count_lines(&["process is not dumpable"]) >= 2,
        "{}",
        host.log_text()
    );
}

#[test]
fn clients_beyond_max_clients_are_refused_and_the_others_served() {
    let mut host = start_listening(Host::without_region(), &["--max-clients", "1"]);
    let mut a = Client::tcp(&host);
    let out_a = a.until_done();
    assert_served(&out_a, a.pid());
    // A second process while the first holds its worker: refused, with a CUDA error, and the
    // refusal logged; the first client's worker is untouched.
    let out_b = run_client(&mut host.tcp_client(&program()));
    assert!(!out_b.stdout.contains("init rc=0"), "{}", out_b.stdout);
    host.log_line(&["refusing a new client", "--max-clients"]);
    let wa = host.worker_of(a.pid());
    assert!(running(wa));
    // Once the first leaves, a new client is served again.
    assert!(a.release().success());
    gone_within(wa, GRACE + EXIT_BOUND, "the first client's worker");
    serves_a_new_client(&mut host);
}

#[test]
fn tcp_clients_must_hold_the_key_unless_the_host_is_told_otherwise() {
    // --listen without TLS material nor --tcp-cleartext, or in clear text without a key nor
    // --tcp-insecure, or --tcp-insecure alone: refused at start, exit 2, one line.
    for (args, says) in [
        (
            &[][..],
            "--listen needs TLS: --tls-cert, --tls-key and --tls-client-ca",
        ),
        (
            &["--tcp-cleartext"][..],
            "--tcp-cleartext needs --tcp-key FILE",
        ),
        (&["--tcp-insecure"][..], "--tcp-cleartext"),
    ] {
        let out = command()
            .arg("--driver")
            .arg(fake_driver())
            .args(["--listen", "127.0.0.1:0", "--prewarm", "false"])
            .args(args)
            .output()
            .expect("run vgpu-host");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("serving"), "{args:?}: {stderr}");
    }

    // A keyed host: a client without the key, or with another one, gets a CUDA error and the
    // host logs the refusal; the client with the key is served.
    let mut host = start_listening(Host::without_region(), &[]);
    let mut no_key = host.tcp_client(&program());
    no_key.env_remove("VGPU_HOST_KEY_FILE");
    let out = run_client(&mut no_key);
    assert!(!out.stdout.contains("init rc=0"), "{}", out.stdout);
    assert!(
        out.stderr.contains("the host requires a key"),
        "{}",
        out.stderr
    );
    let wrong = support::tmp("wrong.key");
    std::fs::write(&wrong, b"not the host's key at all, no\n").expect("write");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut wrong_key = host.tcp_client(&program());
    wrong_key.env("VGPU_HOST_KEY_FILE", &wrong);
    let out = run_client(&mut wrong_key);
    assert!(!out.stdout.contains("init rc=0"), "{}", out.stdout);
    host.log_line(&["tcp connection closed", "key challenge was wrong"]);
    serves_a_new_client(&mut host);
}
