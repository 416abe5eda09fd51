//! The real shim through the real host on this machine: a C program with the shim preloaded
//! talks to `vgpu-host` serving a fake driver (tests/fake_driver/libcuda.c).
//!
//! Covers the exit path: cudart releases its contexts from an `atexit` handler, which runs after
//! the calling thread's thread-local storage is gone; such calls must still be forwarded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shim-host-{}", std::process::id()));
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
        .expect("cc");
    assert!(status.success(), "cc failed for {}", out.display());
}

fn shim() -> PathBuf {
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
}

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef int (*count_fn)(int *);
static count_fn count;
static void at_exit(void) {
    int n = -1;
    int r = count(&n);
    printf("at_exit rc=%d count=%d\n", r, n);
    fflush(stdout);
}
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(cuda, "cuInit");
    count = (count_fn)dlsym(cuda, "cuDeviceGetCount");
    printf("init rc=%d\n", init(0));
    int n = -1;
    int r = count(&n);
    printf("main rc=%d count=%d\n", r, n);
    atexit(at_exit);
    return 0;
}
"#;

#[test]
fn calls_from_exit_handlers_are_forwarded() {
    let driver = tmp("libcuda.so.1");
    let fake = std::fs::read_to_string(root().join("host/tests/fake_driver/libcuda.c"))
        .expect("fake driver");
    cc(
        &driver,
        &fake,
        &["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"],
    );
    let program = tmp("at_exit_client");
    cc(&program, PROGRAM, &["-ldl"]);
    let shim = shim();
    let region = PathBuf::from(format!("/dev/shm/vgpu-exit-test-{}", std::process::id()));
    let mut host = Command::new(env!("CARGO_BIN_EXE_vgpu-host"))
        .arg("--region")
        .arg(&region)
        .arg("--driver")
        .arg(&driver)
        .args(["--region-size", "8388608", "--channels", "8"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start vgpu-host");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !region.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(&program)
        .env("LD_PRELOAD", &shim)
        .env("VGPU_REGION", &region)
        .output()
        .expect("run client");
    let _ = host.kill();
    let _ = host.wait();
    let _ = std::fs::remove_file(&region);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stdout}{stderr}");
    assert!(stdout.contains("init rc=0"), "{stdout}{stderr}");
    assert!(stdout.contains("main rc=0 count=1"), "{stdout}{stderr}");
    assert!(
        stdout.contains("at_exit rc=0 count=1"),
        "the exit handler's call failed: {stdout}{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
