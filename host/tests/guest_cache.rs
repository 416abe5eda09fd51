//! The guest's caches of driver state (shim/src/local_cache.rs) end to end: a C program
//! (tests/cache/client.c) with the shim preloaded asks each query 100 times against the real
//! `vgpu-host` serving the fake driver with a context model (fake_driver/contexts.c). Every
//! answer must be the driver's, and the driver must be asked once per change: after a context
//! call, an attribute set, or another thread's set.

mod support;

use std::path::PathBuf;

use support::{c_build, root, run_client, tmp, FakeDriver, Host};

fn client() -> PathBuf {
    c_build(
        "cache-client",
        &[root().join("host/tests/cache/client.c")],
        &["-O2", "-ldl", "-lpthread"],
    )
}

/// How many times the driver saw `name`.
fn calls(log: &str, name: &str) -> usize {
    log.lines().filter(|l| *l == name).count()
}

#[test]
fn repeated_queries_reach_the_driver_once_per_change() {
    let calls_log = tmp("cache-calls.log");
    let _ = std::fs::remove_file(&calls_log);
    let host = Host::on_region("cache")
        .driver(FakeDriver::Contexts)
        .env("FAKE_CUDA_CALLS", &calls_log)
        .start();
    let out = run_client(&mut host.client(&client()));
    let expected = [
        "device attr 75 = 9",
        "current before: (nil)",
        "device without a context: 201",
        "before retain: flags 0 active 0",
        "after retain: flags 0 active 1",
        "after set flags: flags 4 active 1",
        "current after set: 0x1000",
        "context device: 0",
        "context device (v2, current): 0",
        "context device (v2, named): 0",
        "heap limit: 0",
        "heap limit after set: 1048576",
        "stack limit: 1024",
        "first: kernel attr 8 = 0",
        "after set: kernel attr 8 = 49152",
        "function: 0x5100",
        "function attr 8 = 49152",
        // Sets are posted: the refused one fails on the host, and the next synchronous call
        // of this thread reports it instead of running.
        "too large a set: 0",
        "the next call: 1",
        "after a refused set: kernel attr 8 = 49152",
        "after another thread's set: kernel attr 8 = 1024",
        "function attr 8 after the kernel's set = 1024",
        "current after an unload: 0x1000",
        // The gate forgot the library's kernel with the library.
        "the unloaded kernel: 400",
        "after an unload: kernel attr 8 = 1024",
        "no capture begun: capturing 0",
        "capture begun: capturing 1",
        "capture begun, another stream: capturing 0",
        "a second begin: 401",
        "capture ended: capturing 0",
        "an end without a begin: 401",
        "after a failed end: capturing 0",
        "after release: flags 4 active 0",
    ];
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, expected, "stderr:\n{}", out.stderr);

    let log = std::fs::read_to_string(&calls_log).expect("the driver logged its calls");
    // Primary state: asked before the retain, after it, after the flags, after the release.
    assert_eq!(calls(&log, "cuDevicePrimaryCtxGetState"), 4, "{log}");
    // Current context: before the set, and once after it (a miss bumps nothing).
    // Once more after cuCtxSetLimit (a context-state call), when the kernel's function is asked;
    // never after the unload. Three more are the host's own: its handle gate notes the context
    // a function (the kernel's) and each of the two streams were made in.
    assert_eq!(calls(&log, "cuCtxGetCurrent"), 3 + 3, "{log}");
    // Device of the current context: the failed ask without a context is not kept.
    assert_eq!(calls(&log, "cuCtxGetDevice"), 2, "{log}");
    // _v2 with NULL and with the same context share the kept device: never asked.
    assert_eq!(calls(&log, "cuCtxGetDevice_v2"), 0, "{log}");
    // Kernel attribute: first ask; after the posted set (not kept as an answer); after the
    // refused set's error was reported (the call that reported it did not run); after another
    // thread's set; after an unload (handles of unloaded code may be reused).
    assert_eq!(calls(&log, "cuKernelGetAttribute"), 5, "{log}");
    // 100 posted sets of the same value: one reaches the driver; then the refused one and the
    // other thread's.
    assert_eq!(calls(&log, "cuKernelSetAttribute"), 3, "{log}");
    // Limits: the heap limit once, again after its set; the stack limit every time.
    assert_eq!(calls(&log, "cuCtxGetLimit"), 2 + 100, "{log}");
    assert_eq!(calls(&log, "cuKernelGetFunction"), 1, "{log}");
    // The function's attribute: asked once, then again after the kernel's set.
    assert_eq!(calls(&log, "cuFuncGetAttribute"), 2, "{log}");
    // Capture status: asked only while a capture was open (two streams, 100 each). The failed
    // second begin did not leave a capture counted open; the failed end did not count one
    // closed below zero.
    assert_eq!(calls(&log, "cuStreamIsCapturing"), 200, "{log}");
    assert_eq!(calls(&log, "cuStreamBeginCapture_v2"), 2, "{log}");
    assert_eq!(calls(&log, "cuStreamEndCapture"), 2, "{log}");
}

#[test]
fn the_trace_shows_which_calls_reached_the_host() {
    let calls_log = tmp("cache-trace-calls.log");
    let trace = tmp("cache-trace.log");
    let _ = std::fs::remove_file(&trace);
    let host = Host::on_region("cache-trace")
        .driver(FakeDriver::Contexts)
        .env("FAKE_CUDA_CALLS", &calls_log)
        .start();
    let mut cmd = host.client(&client());
    cmd.env("VGPU_TRACE", &trace);
    let out = run_client(&mut cmd);
    assert!(
        out.stdout.ends_with("after release: flags 4 active 0\n"),
        "{}",
        out.stderr
    );
    let text = std::fs::read_to_string(&trace).expect("trace written");
    let states: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("] cuDevicePrimaryCtxGetState("))
        .collect();
    assert_eq!(states.len(), 400, "every call is traced");
    // Four reached the host (rt=1), the other 396 were answered in the guest.
    assert_eq!(states.iter().filter(|l| l.contains("us rt=1 @")).count(), 4);
    for line in &states {
        let (_, tail) = line.rsplit_once(" -> ").expect("a result");
        let words: Vec<&str> = tail.split(' ').collect();
        assert_eq!(words[0], "CUDA_SUCCESS", "{line}");
        assert!(words[1].ends_with("us"), "{line}");
        assert!(words.last().unwrap().starts_with('@'), "{line}");
    }
}

/// The cost of a kept answer: the queries PyTorch repeats thousands of times per token, 2 M times
/// each, through the shim and directly against the fake driver (a plain call into a shared
/// library: the floor). Prints ns per call; a benchmark, not a check:
/// `cargo test -p host --release --test guest_cache kept_answer_rate -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints figures"]
fn kept_answer_rate() {
    let rate = c_build(
        "cache-rate",
        &[root().join("host/tests/cache/rate.c")],
        &["-O2", "-ldl"],
    );
    let n = std::env::var("VGPU_BENCH_CALLS").unwrap_or_else(|_| "2000000".into());
    let host = Host::on_region("cache-rate")
        .driver(FakeDriver::Contexts)
        .start();
    let through_shim = run_client(host.client(&rate).arg(&n));
    let direct = std::process::Command::new(&rate)
        .arg(&n)
        .env(
            "LD_LIBRARY_PATH",
            FakeDriver::Contexts.path().parent().expect("its folder"),
        )
        .output()
        .expect("run directly");
    let direct = String::from_utf8_lossy(&direct.stdout).into_owned();
    println!("query                         shim ns   direct ns");
    for (shim, plain) in through_shim.stdout.lines().zip(direct.lines()) {
        let (name, ns) = shim.split_once(' ').expect("a figure");
        let plain_ns = plain.split(' ').nth(1).expect("a figure");
        assert!(
            shim.ends_with("rc=0") && plain.ends_with("rc=0"),
            "{shim} / {plain}"
        );
        println!(
            "{name:<30}{:>8}  {plain_ns:>10}",
            ns.split(' ').next().unwrap_or("")
        );
    }
}
