//! Posted calls end to end: a C program (tests/posted/client.c) with the shim preloaded against
//! the real `vgpu-host` serving the fake driver plus host-side "kernels"
//! (tests/posted/fake_kernels.c: `add(int *p, int v)` runs on the host, so the order in which
//! posted calls ran shows in memory).
//!
//! The benchmark (`posted_vs_synchronous_launch_rate`, ignored by default) prints launches per
//! second posted and synchronous:
//! `cargo test -p host --release --test posted_calls -- --ignored --nocapture`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::procs::signal;
use support::{c_build, root, run_client, tmp, FakeDriver, Host};

fn client() -> PathBuf {
    c_build(
        "client",
        &[root().join("host/tests/posted/client.c")],
        &["-O2", "-ldl", "-lpthread"],
    )
}

/// A host on a fresh 16 MiB region serving the fake driver with its host-side kernels (`env`
/// for the host, e.g. `FAKE_CUDA_LAUNCH_US`), the driver logging its calls.
fn start_host(tag: &str, env: &[(&str, &str)]) -> Host {
    env.iter()
        .fold(Host::on_region(tag), |host, (k, v)| host.env(k, v))
        .driver(FakeDriver::PostedKernels)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

/// `cuLaunchKernel add` calls the driver logged.
fn launches_logged(host: &Host) -> usize {
    host.driver_log()
        .lines()
        .filter(|l| l.starts_with("cuLaunchKernel add"))
        .count()
}

/// The client program with `args` and `env`.
fn client_command(host: &Host, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = host.client(&client());
    cmd.args(args).envs(env.iter().copied());
    cmd
}

/// Runs the client to its end: its stdout and stderr.
fn run(host: &Host, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = run_client(&mut client_command(host, args, env));
    (out.stdout, out.stderr)
}

fn expect_lines(stdout: &str, lines: &[&str]) {
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, lines, "full output:\n{stdout}");
}

#[test]
fn posted_launches_and_memsets_run_in_order_before_the_next_call() {
    let host = start_host("order", &[]);
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
    let (stdout, _) = run(&host, &["order"], &[("VGPU_TRACE", trace_env)]);
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
    assert_eq!(launches_logged(&host), 1000);

    // VGPU_ASYNC=0: the same results, every call synchronous.
    let (stdout, _) = run(&host, &["order"], &[("VGPU_ASYNC", "0")]);
    expect_lines(&stdout, &expected);
}

#[test]
fn a_failed_posted_call_fails_the_next_synchronous_call_once() {
    let host = start_host("error", &[]);
    let (stdout, stderr) = run(&host, &["error"], &[]);
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
    let (stdout, stderr) = run(&host, &["error"], &[("VGPU_ASYNC", "0")]);
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
    let host = start_host("threads", &[("FAKE_CUDA_LAUNCH_US", "300")]);
    let (stdout, stderr) = run(&host, &["threads"], &[]);
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
    let host = start_host("exit", &[("FAKE_CUDA_LAUNCH_US", "2000")]);
    let (stdout, _) = run(&host, &["exit"], &[]);
    expect_lines(
        &stdout,
        &["init rc=0", "alloc rc=0", "posted rc=0, leaving"],
    );
    // 50 launches of 2 ms: the process waited for them at exit.
    assert_eq!(launches_logged(&host), 50);
}

#[test]
fn a_killed_host_fails_the_next_call_after_posts_without_hanging() {
    // 20 launches of 100 ms: the worker is still running them when it is killed.
    let host = start_host("kill", &[("FAKE_CUDA_LAUNCH_US", "100000")]);
    let mut child = client_command(&host, &["kill"], &[])
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
    let worker = host.worker_of(child.id());
    signal(worker, libc::SIGKILL);
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
    let host = start_host("bench", &[]);
    let n = std::env::var("VGPU_BENCH_LAUNCHES").unwrap_or_else(|_| "100000".into());
    for async_mode in ["0", "1", "0", "1"] {
        let (stdout, _) = run(&host, &["bench", &n], &[("VGPU_ASYNC", async_mode)]);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("bench"))
            .expect("bench line");
        assert!(line.ends_with("rc=0"), "{line}");
        println!("{line}");
    }
}
