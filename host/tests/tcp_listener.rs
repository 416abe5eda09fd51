//! `vgpu-host --listen`: guests reach the host over TCP. End to end on this machine: the real
//! shim, preloaded into a C program with `VGPU_HOST=127.0.0.1:PORT`, talks to the real
//! `vgpu-host` serving the fake driver (tests/fake_driver/libcuda.c).
//!
//! Covers: calls from two threads of one process (one worker) and from two processes (two
//! workers); a SIGKILLed client's worker gone within the grace period plus a bound; a TCP
//! client beside a region client; silent, garbage and hostile connections closed with a log
//! line while the supervisor keeps serving; an address that cannot be bound.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use transport::{TcpClient, Transport};

/// The grace period the tests give TCP workers (`--tcp-grace-ms`).
const GRACE: Duration = Duration::from_millis(300);
/// How long past the grace period a worker may take to be gone.
const EXIT_BOUND: Duration = Duration::from_secs(2);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tcp-listener-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn cc(out: &Path, src: &str, extra: &[&str]) {
    let c = out.with_extension("c");
    std::fs::write(&c, src).expect("write C source");
    let status = Command::new("cc")
        .arg("-o")
        .arg(out)
        .arg(&c)
        .args(extra)
        .status()
        .expect("cc (install a C compiler)");
    assert!(status.success(), "cc failed for {}", out.display());
}

fn fake_driver() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = tmp("libcuda.so.1");
        let src = std::fs::read_to_string(root().join("host/tests/fake_driver/libcuda.c"))
            .expect("fake driver source");
        cc(
            &lib,
            &src,
            &["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"],
        );
        lib
    })
}

fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/build-shim.sh"))
            .arg("--debug")
            .output()
            .expect("run scripts/build-shim.sh");
        assert!(
            out.status.success(),
            "build-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .expect("path"),
        )
    })
}

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

fn program() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = tmp("two_threads");
        cc(&exe, PROGRAM, &["-ldl", "-pthread"]);
        exe
    })
}

/// A running `vgpu-host`; killed on drop. Keeps every stderr line.
struct Host {
    child: Child,
    tcp: SocketAddr,
    region: Option<PathBuf>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Starts a host with `args` (plus the fake driver, debug logs and the test's grace
    /// period); returns once it is ready, with the TCP address from its ready line.
    fn start(args: &[&str], region: Option<PathBuf>) -> Host {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgpu-host"));
        cmd.arg("--driver").arg(fake_driver()).args(args).args([
            "--log",
            "debug",
            "--tcp-grace-ms",
            &GRACE.as_millis().to_string(),
        ]);
        if let Some(region) = &region {
            cmd.arg("--region")
                .arg(region)
                .args(["--region-size", "8388608", "--channels", "8"]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vgpu-host");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("[host] {line}");
                if line.starts_with("vgpu-host: serving ") {
                    let _ = tx.send(line.clone());
                }
                keep.lock().expect("lines").push(line);
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("vgpu-host never became ready");
        // "vgpu-host: serving [REGION, ]tcp ADDR (pid N)"
        let tcp = ready
            .split("tcp ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no tcp address in {ready:?}"));
        Host {
            child,
            tcp,
            region,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for a log line containing every one of `parts`; returns it.
    fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no host log line with {parts:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count_lines(&self, parts: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    fn assert_no_panic(&self) {
        for line in self.lines.lock().expect("lines").iter() {
            assert!(!line.contains("panicked"), "{line}");
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(4);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(region) = &self.region {
            let _ = std::fs::remove_file(region);
        }
    }
}

/// Parent pid, process name and whether it runs (not a zombie).
fn proc_info(pid: u32) -> Option<(u32, String, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = stat[stat.find('(')? + 1..stat.rfind(')')?].to_owned();
    let mut rest = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm, state != "Z" && state != "X"))
}

fn running(pid: u32) -> bool {
    proc_info(pid).is_some_and(|(_, _, run)| run)
}

/// Live children of `parent` named `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| proc_info(pid).is_some_and(|(pp, c, r)| pp == parent && r && c == name))
        .collect()
}

/// The one worker of guest `pid` (waits, bounded, until exactly one exists).
fn worker_of(host: &Host, pid: u32) -> u32 {
    let name = format!("vgpuw-{pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = children_named(host.pid(), &name);
        if found.len() == 1 {
            return found[0];
        }
        assert!(
            Instant::now() < deadline,
            "expected one worker {name}, found {found:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` is gone; panics after `bound`.
fn gone_within(pid: u32, bound: Duration, what: &str) {
    let start = Instant::now();
    while running(pid) {
        assert!(
            start.elapsed() < bound,
            "{what} ({pid}) still running after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A run of [`PROGRAM`] that waits on stdin after its calls.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(env: (&str, String)) -> Client {
        let mut child = Command::new(program())
            .arg("hold")
            .env("LD_PRELOAD", shim())
            .env(env.0, env.1)
            .env_remove(if env.0 == "VGPU_HOST" {
                "VGPU_REGION"
            } else {
                "VGPU_HOST"
            })
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
        Client::start(("VGPU_HOST", host.tcp.to_string()))
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
    let mut host = Host::start(&["--listen", "127.0.0.1:0"], None);
    let mut a = Client::tcp(&host);
    let mut b = Client::tcp(&host);
    let out_a = a.until_done();
    let out_b = b.until_done();
    assert_served(&out_a, a.pid());
    assert_served(&out_b, b.pid());
    // Each process has exactly one worker, of its own.
    let wa = worker_of(&host, a.pid());
    let wb = worker_of(&host, b.pid());
    assert_ne!(wa, wb);
    // The main thread and both worker threads of A came over TCP, each logged with its peer,
    // and all reached A's worker.
    let tag_a = format!("pid={}", a.pid());
    let tag_wa = format!("worker={wa}");
    host.log_line(&["tcp connection", "peer=127.0.0.1:", &tag_a]);
    assert_eq!(
        host.count_lines(&["tcp connection", &tag_a, &tag_wa]),
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
    let region = PathBuf::from(format!("/dev/shm/vgpu-tcptest-{}", std::process::id()));
    let mut host = Host::start(
        &["--listen", "127.0.0.1:0", "--prewarm", "false"],
        Some(region.clone()),
    );
    let mut tcp = Client::tcp(&host);
    let mut shm = Client::start(("VGPU_REGION", region.display().to_string()));
    let out_tcp = tcp.until_done();
    let out_shm = shm.until_done();
    assert_served(&out_tcp, tcp.pid());
    assert_served(&out_shm, shm.pid());
    let w_tcp = worker_of(&host, tcp.pid());
    let w_shm = worker_of(&host, shm.pid());
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
    let mut host = Host::start(&["--listen", "127.0.0.1:0"], None);
    // A peer that connects and says nothing does not hold up the next client: a real client
    // completes its handshake while the silent one is still waiting.
    let mut silent = TcpStream::connect(host.tcp).expect("connect");
    let silent_peer = silent.local_addr().expect("addr").to_string();
    let mut client = TcpClient::connect(host.tcp).expect("a client beside a silent peer");
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

    // Garbage instead of the handshake: refused (status non-zero), closed, one log line.
    let mut garbage = TcpStream::connect(host.tcp).expect("connect");
    let garbage_peer = garbage.local_addr().expect("addr").to_string();
    garbage.write_all(&[0x5a; 40]).expect("write garbage");
    let mut ack = [0u8; 16];
    garbage.read_exact(&mut ack).expect("refusal");
    assert_eq!(&ack[0..8], b"VGPUTCP1");
    assert_ne!(&ack[12..16], &[0, 0, 0, 0], "garbage accepted");
    // Closed: end of file, or a reset since the host closed with the 8 extra bytes unread.
    match garbage.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("garbage connection left open: {other:?}"),
    }
    host.log_line(&["tcp connection closed", &garbage_peer, "bad handshake"]);

    // A valid handshake followed by a garbage frame: an error answer, not a crash.
    let mut response = Vec::new();
    client
        .call(&[0xff; 3], &mut response)
        .expect("an answer to a garbage frame");
    assert!(!response.is_empty());
    // A valid handshake, then a frame length of 2^64-1 and a few bytes, then the peer leaves:
    // the worker reads what arrives (allocating only that), gives up at the end of the stream,
    // and the host stays.
    let mut hostile = TcpStream::connect(host.tcp).expect("connect");
    let mut hello = Vec::new();
    hello.extend_from_slice(b"VGPUTCP1");
    hello.extend_from_slice(&1u32.to_le_bytes());
    hello.extend_from_slice(&4242u32.to_le_bytes());
    hello.extend_from_slice(&4243u32.to_le_bytes());
    hello.extend_from_slice(&0u32.to_le_bytes());
    hello.extend_from_slice(&0x0bad_cafe_u64.to_le_bytes());
    hostile.write_all(&hello).expect("handshake");
    hostile.read_exact(&mut ack).expect("ack");
    assert_eq!(&ack[12..16], &[0, 0, 0, 0], "a valid handshake was refused");
    hostile.write_all(&u64::MAX.to_le_bytes()).expect("length");
    hostile.write_all(&[7; 1000]).expect("some bytes");
    let hostile_worker = worker_of(&host, 4242);
    drop(hostile);
    gone_within(
        hostile_worker,
        GRACE + EXIT_BOUND,
        "the hostile client's worker",
    );
    drop(client);

    // The supervisor kept serving all along: a real client is served now.
    let mut after = Client::tcp(&host);
    let out = after.until_done();
    assert_served(&out, after.pid());
    assert!(after.release().success());
    assert!(host.alive());
    host.assert_no_panic();
}

#[test]
fn an_address_in_use_is_one_line_and_exit_6() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu-host"))
        .arg("--driver")
        .arg(fake_driver())
        .args(["--listen", &addr, "--prewarm", "false"])
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
