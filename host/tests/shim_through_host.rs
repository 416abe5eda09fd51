//! The real shim through the real host on this machine: a C program with the shim preloaded
//! talks to `vgpu-host` serving a fake driver (tests/fake_driver/libcuda.c).
//!
//! Covers the exit path: cudart releases its contexts from an `atexit` handler, which runs after
//! the calling thread's thread-local storage is gone; such calls must still be forwarded.

mod support;

use support::{c_program, run_client, Host};

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
    let program = c_program("at_exit_client", PROGRAM, &["-ldl"]);
    let host = Host::on_region("exit").start();
    let out = run_client(&mut host.client(&program));
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(stdout.contains("init rc=0"), "{stdout}{stderr}");
    assert!(stdout.contains("main rc=0 count=1"), "{stdout}{stderr}");
    assert!(
        stdout.contains("at_exit rc=0 count=1"),
        "the exit handler's call failed: {stdout}{stderr}"
    );
}
