//! Posted calls end to end: a C program (tests/posted/client.c) with the shim preloaded against
//! the real `vgpu-host` serving the fake driver plus host-side "kernels"
//! (tests/posted/fake_kernels.c: `add(int *p, int v)` runs on the host, so the order in which
//! posted calls ran shows in memory).
//!
//! The benchmark (`posted_vs_synchronous_launch_rate`, ignored by default) prints launches per
//! second posted and synchronous:
//! `cargo test -p host --release --test posted_calls -- --ignored --nocapture`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("posted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn cc(out: &Path, src: &Path, extra: &[&str]) {
    let status = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(out)
        .arg(src)
        .args(extra)
        .status()
        .expect("cc (install a C compiler)");
    assert!(status.success(), "cc failed for {}", src.display());
}

fn fake_driver() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let lib = tmp("libcuda.so.1");
        cc(
            &lib,
            &root().join("host/tests/posted/fake_kernels.c"),
            &["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-lpthread"],
        );
        lib
    })
}

fn client() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = tmp("client");
        cc(
            &bin,
            &root().join("host/tests/posted/client.c"),
            &["-ldl", "-lpthread"],
        );
        bin
    })
}

fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/build-shim.sh"));
        if cfg!(debug_assertions) {
            cmd.arg("--debug");
        }
        let out = cmd.output().expect("run scripts/build-shim.sh");
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

/// A running `vgpu-host` on its own region, serving the fake driver with `env`.
struct Host {
    child: Child,
    region: PathBuf,
    log: PathBuf,
}

impl Host {
    fn start(tag: &str, env: &[(&str, &str)]) -> Host {
        let region = PathBuf::from(format!("/dev/shm/vgpu-posted-{tag}-{}", std::process::id()));
        let log = tmp(&format!("{tag}.log"));
        let _ = std::fs::remove_file(&log);
        let child = Command::new(env!("CARGO_BIN_EXE_vgpu-host"))
            .arg("--region")
            .arg(&region)
            .arg("--driver")
            .arg(fake_driver())
            .args(["--region-size", "16777216", "--channels", "8"])
            .env("FAKE_CUDA_LOG", &log)
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vgpu-host");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !region.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The spare worker warms up before the host is ready.
        std::thread::sleep(Duration::from_millis(300));
        Host { child, region, log }
    }

    fn launches_logged(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("cuLaunchKernel add"))
            .count()
    }

    fn client(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(client());
        cmd.args(args)
            .env("LD_PRELOAD", shim())
            .env("VGPU_REGION", &self.region)
            .env_remove("VGPU_ASYNC")
            .env_remove("VGPU_TRACE")
            .envs(env.iter().copied());
        cmd
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let out: Output = self.client(args, env).output().expect("run client");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "client failed: {stdout}{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        (stdout, stderr)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.region);
    }
}

fn expect_lines(stdout: &str, lines: &[&str]) {
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, lines, "full output:\n{stdout}");
}

#[test]
fn posted_launches_and_memsets_run_in_order_before_the_next_call() {
    let host = Host::start("order", &[]);
    let trace = tmp("order.trace");
    let _ = std::fs::remove_file(&trace);
    let trace_env = trace.to_str().expect("utf-8 path");
    // 1000 launches adding 1..=1000, a memset to 1000000 before the 501st: only in order is
    // the result 1000000 + 501 + … + 1000.
    let expected = [
        "init rc=0",
        "alloc rc=0",
        "posted rc=0",
        "value=1375250",
        "sync rc=0",
    ];
    let (stdout, _) = host.run(&["order"], &[("VGPU_TRACE", trace_env)]);
    expect_lines(&stdout, &expected);
    let trace = std::fs::read_to_string(&trace).expect("trace file");
    let launches: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("] cuLaunchKernel("))
        .collect();
    assert_eq!(launches.len(), 1000);
    assert!(
        launches.iter().all(|l| l.contains("-> posted ")),
        "{}",
        launches[0]
    );
    assert!(trace
        .lines()
        .any(|l| l.contains("cuMemsetD32Async(") && l.contains("-> posted ")));
    assert!(trace
        .lines()
        .any(|l| l.contains("cuMemcpyDtoH_v2(") && l.contains("-> CUDA_SUCCESS ")));
    assert_eq!(host.launches_logged(), 1000);

    // VGPU_ASYNC=0: the same results, every call synchronous.
    let (stdout, _) = host.run(&["order"], &[("VGPU_ASYNC", "0")]);
    expect_lines(&stdout, &expected);
}

#[test]
fn a_failed_posted_call_fails_the_next_synchronous_call_once() {
    let host = Host::start("error", &[]);
    let (stdout, stderr) = host.run(&["error"], &[]);
    // The bad launch and the zero grid return success when posted; the first synchronous call
    // reports the first failure (CUDA_ERROR_INVALID_HANDLE) without running, the next runs.
    // The launches after the failed one ran: 3 + 10.
    expect_lines(
        &stdout,
        &[
            "init rc=0",
            "alloc rc=0",
            "bad launch rc=0",
            "zero grid rc=0",
            "good rc=0",
            "first sync rc=400",
            "second sync rc=0",
            "value=13",
        ],
    );
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("posted cuLaunchKernel failed"))
        .collect();
    assert_eq!(reports.len(), 1, "{stderr}");
    assert!(
        reports[0].contains("CUDA_ERROR_INVALID_HANDLE")
            && reports[0].contains("1 later posted calls failed too")
            && reports[0].contains("cuCtxSynchronize"),
        "{stderr}"
    );

    // Synchronous mode: each failure at its own call, nothing deferred.
    let (stdout, stderr) = host.run(&["error"], &[("VGPU_ASYNC", "0")]);
    expect_lines(
        &stdout,
        &[
            "init rc=0",
            "alloc rc=0",
            "bad launch rc=400",
            "zero grid rc=1",
            "good rc=0",
            "first sync rc=0",
            "second sync rc=0",
            "value=13",
        ],
    );
    assert!(!stderr.contains("posted"), "{stderr}");
}

#[test]
fn another_threads_posted_calls_run_before_a_call_ordered_after_them() {
    // Each launch takes 300 us on the host, so without ordering across threads the read would
    // overtake the other thread's launches still in its ring.
    let host = Host::start("threads", &[("FAKE_CUDA_LAUNCH_US", "300")]);
    let (stdout, stderr) = host.run(&["threads"], &[]);
    expect_lines(
        &stdout,
        &[
            "init rc=0",
            "alloc rc=0",
            "memset rc=0",
            "sync rc=0",
            "thread posted rc=0",
            "value=200",
            "thread bad launch rc=0",
            "after thread exit sync rc=0",
        ],
    );
    // The ending thread flushed its posted calls: its failure was logged, not lost, and not
    // handed to another thread.
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("posted cuLaunchKernel failed with CUDA_ERROR_INVALID_HANDLE"))
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn posted_calls_are_flushed_when_the_process_exits() {
    let host = Host::start("exit", &[("FAKE_CUDA_LAUNCH_US", "2000")]);
    let (stdout, _) = host.run(&["exit"], &[]);
    expect_lines(
        &stdout,
        &["init rc=0", "alloc rc=0", "posted rc=0, leaving"],
    );
    // 50 launches of 2 ms: the process waited for them at exit.
    assert_eq!(host.launches_logged(), 50);
}

/// Pid of `vgpu-host`'s worker serving guest `guest` (its name is `vgpuw-<guest pid>`).
fn worker_of(host: u32, guest: u32) -> u32 {
    let name = format!("vgpuw-{guest}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let ppid = stat[close + 1..].split_ascii_whitespace().nth(1);
            if stat[open + 1..close] == name && ppid == Some(&host.to_string()) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no worker {name}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_killed_host_fails_the_next_call_after_posts_without_hanging() {
    // 20 launches of 100 ms: the worker is still running them when it is killed.
    let host = Host::start("kill", &[("FAKE_CUDA_LAUNCH_US", "100000")]);
    let mut child = host
        .client(&["kill"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start client");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("client output");
        lines.push(line.trim().to_owned());
    }
    assert_eq!(lines, ["init rc=0", "alloc rc=0", "posted rc=0"]);
    let worker = worker_of(host.child.id(), child.id());
    // SAFETY: kill with the pid of the worker of our own host, still running (found above).
    unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
    let started = Instant::now();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell the client");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("client output");
    let status = child.wait().expect("client exit");
    // CUDA_ERROR_DEVICE_UNAVAILABLE (46) for the synchronous call and every call after it.
    assert_eq!(
        rest.lines().collect::<Vec<_>>(),
        ["sync after kill rc=46", "launch after kill rc=46"]
    );
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "benchmark: prints figures; run with --ignored --nocapture (release for real numbers)"]
fn posted_vs_synchronous_launch_rate() {
    let host = Host::start("bench", &[]);
    let n = std::env::var("VGPU_BENCH_LAUNCHES").unwrap_or_else(|_| "100000".into());
    for async_mode in ["0", "1", "0", "1"] {
        let (stdout, _) = host.run(&["bench", &n], &[("VGPU_ASYNC", async_mode)]);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("bench"))
            .expect("bench line");
        assert!(line.ends_with("rc=0"), "{line}");
        println!("{line}");
    }
}
