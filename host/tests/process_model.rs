//! The host's process model, end to end on this machine without a GPU: a fake `libcuda.so.1`
//! (tests/fake_driver/libcuda.c, built here with `cc`) stands in for the driver, and guest
//! processes (this test binary re-executed as `helper_guest_process`) talk to the real
//! `vgpu-host` through the real transport.
//!
//! These tests assert routing and liveness (which worker process serves which guest, who exits
//! when): the worker pid in each HELLO's Welcome must match the worker found through `/proc`
//! (workers are named `vgpuw-<guest pid>`).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::handshake::Welcome;
use protocol::ResponseHeader;
use support::host::{command, unique_region, HostBuilder};
use support::procs::{children_where, one_child_named, running, signal};
use support::wire::hello_frame;
use support::{fake_driver, Host};

const GUEST_ENV: &str = "VGPU_TEST_GUEST_REGION";
const GUEST_CHANNELS_ENV: &str = "VGPU_TEST_GUEST_CHANNELS";

/// A host on a fresh region with 16 channels, a 1 s peer timeout and debug logs.
fn host(tag: &str) -> HostBuilder {
    Host::on_region(tag)
        .channels(16)
        .args(["--peer-timeout-ms", "1000", "--log", "debug"])
}

/// A guest process (this test binary running `helper_guest_process`).
struct Guest {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Worker pid from each start-up channel's Welcome.
    welcomed: Vec<u32>,
}

impl Guest {
    /// Starts a guest that connects `channels` channels, one per thread, and says HELLO on each.
    fn start(region: &Path, channels: usize) -> Guest {
        let mut child = Command::new(std::env::current_exe().expect("test exe"))
            .args([
                "--exact",
                "helper_guest_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(GUEST_ENV, region)
            .env(GUEST_CHANNELS_ENV, channels.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn guest");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut guest = Guest {
            child,
            stdin,
            stdout,
            welcomed: Vec::new(),
        };
        let ready = guest.answer();
        let (count, workers) = ready
            .strip_prefix("ready ")
            .and_then(|r| r.split_once(' '))
            .unwrap_or_else(|| panic!("guest start: {ready}"));
        assert_eq!(count, channels.to_string(), "guest start");
        guest.welcomed = workers
            .split(',')
            .map(|p| p.parse().expect("pid"))
            .collect();
        guest
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next `GUEST …` line the helper printed.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("guest stdout");
            assert!(n > 0, "guest ended without answering");
            // libtest prints "test helper_guest_process ... " before the first line.
            if let Some((_, rest)) = line.trim_end().split_once("GUEST ") {
                return rest.to_owned();
            }
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("guest stdin");
        self.answer()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Says HELLO on a channel; returns the serving worker's pid from the Welcome (0 when the
/// handshake was refused: the result code is then in the error).
fn hello(channel: &mut transport::GuestChannel) -> Result<u32, transport::TransportError> {
    let mut response = Vec::new();
    channel.call(&hello_frame(), &mut response)?;
    let mut dec = protocol::Decoder::new(&response);
    let header = ResponseHeader::read(&mut dec).expect("response header");
    if header.result != 0 {
        return Ok(0);
    }
    Ok(Welcome::decode(&mut dec).expect("welcome").worker_pid)
}

fn describe(r: Result<u32, transport::TransportError>) -> String {
    match r {
        Ok(code) => format!("ok {code}"),
        Err(e) => format!("err {e:?}"),
    }
}

/// Not a test of its own: the guest process the other tests start (does nothing unless
/// started by them). Commands on stdin: `call0` (call again on the first channel), `connect`
/// (a new channel from a new thread, HELLO on it).
#[test]
fn helper_guest_process() {
    let Some(region) = std::env::var_os(GUEST_ENV) else {
        return;
    };
    let channels: usize = std::env::var(GUEST_CHANNELS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let region = transport::Region::open(&region).expect("guest: open region");
    let connect = |region: &transport::Region| {
        let region = region.clone();
        std::thread::spawn(move || {
            let mut channel = region.connect()?;
            let worker = hello(&mut channel)?;
            Ok::<_, transport::TransportError>((channel, worker))
        })
        .join()
        .expect("guest thread")
    };
    let (mut open, workers): (Vec<transport::GuestChannel>, Vec<u32>) = (0..channels)
        .map(|_| connect(&region).expect("guest: connect + hello"))
        .unzip();
    let workers: Vec<String> = workers.iter().map(u32::to_string).collect();
    println!("GUEST ready {} {}", open.len(), workers.join(","));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim() {
            "call0" => describe(hello(&mut open[0])),
            "connect" => match connect(&region) {
                Ok((c, worker)) => {
                    open.push(c);
                    format!("ok {worker}")
                }
                Err(e) => format!("err {e:?}"),
            },
            other => format!("err unknown command {other}"),
        };
        println!("GUEST {answer}");
    }
}

/// Runs `vgpu-host --region <fresh> --driver <driver>` (with `env`), which must refuse to serve:
/// its exit code and its one stderr line; the region must not have been created.
fn refused(tag: &str, driver: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let region = unique_region(tag);
    let out = command()
        .arg("--region")
        .arg(&region)
        .arg("--driver")
        .arg(driver)
        .envs(env.iter().copied())
        .output()
        .expect("run vgpu-host");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!region.exists());
    (out.status.code().expect("exit code"), lines[0].to_owned())
}

#[test]
fn missing_driver_is_one_line_and_exit_3() {
    let (code, line) = refused("nodriver", Path::new("/nonexistent/libcuda.so.1"), &[]);
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("vgpu-host: cannot load the CUDA driver /nonexistent/libcuda.so.1"),
        "{line}"
    );
}

#[test]
fn driver_without_gpu_is_one_line_and_exit_4() {
    let (code, line) = refused("nogpu", &fake_driver(), &[("FAKE_CUDA_DEVICES", "0")]);
    assert_eq!(code, 4, "{line}");
    assert!(line.contains("no CUDA-capable GPU"), "{line}");
}

/// The shim is `libcuda.so.1` too: an operator whose `--driver` (or library path) finds it gets
/// told so, instead of "cuInit failed with CUDA error 3".
#[test]
fn the_shim_as_driver_is_refused_as_the_shim() {
    let shim = support::built_shim();
    for driver in [shim.to_owned(), shim.with_file_name("libcuda.so.1")] {
        let (code, line) = refused("shimdriver", &driver, &[]);
        assert_eq!(code, 3, "{line}");
        assert!(
            line.starts_with(&format!("vgpu-host: {} is the vgpu shim", driver.display()))
                && line.contains("not a CUDA driver"),
            "{line}"
        );
    }
}

#[test]
fn threads_share_their_process_worker_and_processes_get_their_own() {
    let host = host("routing").args(["--prewarm", "false"]).start();
    let mut a = Guest::start(host.region(), 2);
    let b = Guest::start(host.region(), 1);
    let wa = host.worker_of(a.pid());
    let wb = host.worker_of(b.pid());
    assert_ne!(wa, wb);
    // Both threads of A were welcomed by A's worker, B's by B's.
    assert_eq!(a.welcomed, vec![wa, wa]);
    assert_eq!(b.welcomed, vec![wb]);
    // A third thread of A lands in the same worker: still exactly one worker for A.
    assert_eq!(a.ask("connect"), format!("ok {wa}"));
    assert_eq!(host.worker_of(a.pid()), wa);
    // Only these two workers exist (no spare with --prewarm false).
    let all = children_where(host.pid(), |name| name.starts_with("vgpuw-"));
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn sigkill_of_a_client_ends_its_worker_within_a_second() {
    let host = host("clientkill").args(["--prewarm", "false"]).start();
    let mut a = Guest::start(host.region(), 2);
    let b = Guest::start(host.region(), 1);
    let wa = host.worker_of(a.pid());
    let wb = host.worker_of(b.pid());
    let _ = a.child.kill();
    let killed = Instant::now();
    let _ = a.child.wait();
    while running(wa) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "worker {wa} outlived its client by 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(running(wb), "the other client's worker ended too");
    assert!(running(host.pid()));
}

#[test]
fn a_crashed_worker_leaves_other_clients_alone() {
    let host = host("workerkill").args(["--prewarm", "false"]).start();
    let mut a = Guest::start(host.region(), 1);
    let mut b = Guest::start(host.region(), 1);
    let wa = host.worker_of(a.pid());
    let wb = host.worker_of(b.pid());
    signal(wa, libc::SIGKILL);
    // A's open channel reports its server gone.
    let answer = a.ask("call0");
    assert!(answer.starts_with("err PeerGone"), "{answer}");
    // B keeps its worker and is still served.
    assert_eq!(b.ask("connect"), format!("ok {wb}"));
    assert_eq!(host.worker_of(b.pid()), wb);
    // A new thread of A is served by a fresh worker.
    let answer = a.ask("connect");
    let wa2 = host.worker_of(a.pid());
    assert_ne!(wa2, wa);
    assert_eq!(answer, format!("ok {wa2}"));
    assert!(running(host.pid()));
}

#[test]
fn the_spare_worker_takes_the_next_client_and_is_replaced() {
    let host = host("spare").start();
    let spare = one_child_named(host.pid(), "vgpuw-spare");
    let a = Guest::start(host.region(), 1);
    assert_eq!(
        host.worker_of(a.pid()),
        spare,
        "the spare did not serve the client"
    );
    let next = one_child_named(host.pid(), "vgpuw-spare");
    assert_ne!(next, spare);
}

#[test]
fn a_client_handed_a_still_warming_spare_is_served() {
    // The real driver's cuInit takes 100-300 ms: the next client often gets a spare that is
    // not warm yet. The supervisor stops reading the spare's stdout once it has a client; the
    // spare must not die on that closed pipe.
    let host = host("warming").env("FAKE_CUDA_INIT_MS", "300").start();
    let region = host.region().to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let guest = Guest::start(&region, 1);
            let _ = tx.send(guest.pid());
            drop(guest);
        }
    });
    for n in 1..=2 {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("client {n} was never served"));
    }
}

#[test]
fn sigterm_stops_workers_and_removes_the_region_it_created() {
    let mut host = host("sigterm").start();
    let a = Guest::start(host.region(), 1);
    let wa = host.worker_of(a.pid());
    let spare = one_child_named(host.pid(), "vgpuw-spare");
    let status = host.stop();
    assert_eq!(status.code(), Some(0));
    assert!(!running(wa) && !running(spare));
    assert!(!host.region().exists(), "region file left behind");
    host.assert_no_panic();
}

#[test]
fn a_new_region_file_is_exactly_the_requested_size() {
    // A power of two, as a VM's ivshmem BAR needs (QEMU maps the whole file); the layout alone
    // would leave the file at its capacity, a little less.
    for (tag, precreate) in [("size-new", false), ("size-empty", true)] {
        let region = unique_region(tag);
        if precreate {
            std::fs::write(&region, []).expect("create an empty region file");
        }
        let mut host = Host::on_region(tag)
            .region_at(&region)
            .region_size(16 << 20)
            .args(["--prewarm", "false", "--keep-region"])
            .start();
        let len = std::fs::metadata(&region).expect("region file").len();
        assert_eq!(len, 16 << 20, "{tag}");
        let _guest = Guest::start(host.region(), 1);
        assert_eq!(host.stop().code(), Some(0));
        assert_eq!(std::fs::metadata(&region).expect("kept").len(), 16 << 20);
        std::fs::remove_file(&region).expect("cleanup");
    }
}

#[test]
fn an_existing_region_file_is_kept_on_exit() {
    let region = unique_region("keep");
    std::fs::write(&region, []).expect("create region file");
    let mut host = Host::on_region("keep")
        .region_at(&region)
        .args(["--prewarm", "false"])
        .start();
    assert_eq!(host.stop().code(), Some(0));
    assert!(region.exists());
    std::fs::remove_file(&region).expect("cleanup");
}
