//! Pageable copies pipelined through zero-copy staging (shim/src/handlers/staged.rs) end to end:
//! a C program with the shim preloaded copies pageable buffers of odd sizes at odd offsets to and
//! from device memory through the real `vgpu-host` serving the fake driver with host-side kernels
//! (posted/fake_kernels.c: `add` runs on the host, so a kernel posted between two copies shows
//! whether the order held). The driver's log shows which path each copy took.

mod support;

use std::path::PathBuf;

use support::{c_program, run_client, FakeDriver, Host};

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef unsigned long long dptr;
#define FN(ret, name, args) typedef ret (*name##_t) args; static name##_t name;
FN(int, cuInit, (unsigned))
FN(int, cuMemAlloc_v2, (dptr *, size_t))
FN(int, cuMemcpyHtoD_v2, (dptr, const void *, size_t))
FN(int, cuMemcpyDtoH_v2, (void *, dptr, size_t))
FN(int, cuMemcpyHtoDAsync_v2, (dptr, const void *, size_t, void *))
FN(int, cuMemcpyDtoHAsync_v2, (void *, dptr, size_t, void *))
FN(int, cuMemcpyHtoD_v2_ptds, (dptr, const void *, size_t))
FN(int, cuMemcpyDtoH_v2_ptds, (void *, dptr, size_t))
FN(int, cuLaunchKernel, (void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, void *, void **, void **))
FN(int, cuCtxSynchronize, (void))
FN(int, cuModuleLoadData, (void **, const void *))
FN(int, cuModuleGetFunction, (void **, void *, const char *))
#define LOAD(name) name = (name##_t)dlsym(cuda, #name); if (!name) { printf("missing %s\n", #name); return 2; }
/* The fake driver's `add` kernel, by its name (its hex handle) in a loaded module. */
static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n";
static void *ADD_KERNEL;

static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *p = malloc(n + 16);
    for (size_t i = 0; i < n + 16; i++) p[i] = (unsigned char)(i * 131 + seed);
    return p;
}

/* Round trip of `n` bytes from src+3 to device+5 and back into dst+1, sync or async. */
static int round_trip(dptr d, size_t n, int async, int per_thread, unsigned seed) {
    unsigned char *src = pattern(n, seed), *dst = calloc(1, n + 16);
    int r1 = async ? cuMemcpyHtoDAsync_v2(d + 5, src + 3, n, 0)
                   : per_thread ? cuMemcpyHtoD_v2_ptds(d + 5, src + 3, n)
                                : cuMemcpyHtoD_v2(d + 5, src + 3, n);
    int r2 = async ? cuMemcpyDtoHAsync_v2(dst + 1, d + 5, n, 0)
                   : per_thread ? cuMemcpyDtoH_v2_ptds(dst + 1, d + 5, n)
                                : cuMemcpyDtoH_v2(dst + 1, d + 5, n);
    int same = memcmp(src + 3, dst + 1, n) == 0 && dst[0] == 0 && dst[n + 1] == 0;
    printf("%s%s %zu: rc %d %d same %d\n", async ? "async" : "sync", per_thread ? " ptds" : "", n, r1, r2, same);
    free(src);
    free(dst);
    return same;
}

int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    LOAD(cuInit) LOAD(cuMemAlloc_v2) LOAD(cuMemcpyHtoD_v2) LOAD(cuMemcpyDtoH_v2)
    LOAD(cuMemcpyHtoDAsync_v2) LOAD(cuMemcpyDtoHAsync_v2) LOAD(cuMemcpyHtoD_v2_ptds)
    LOAD(cuMemcpyDtoH_v2_ptds) LOAD(cuLaunchKernel) LOAD(cuCtxSynchronize) LOAD(cuModuleLoadData)
    LOAD(cuModuleGetFunction)
    printf("init rc=%d\n", cuInit(0));
    void *module = NULL;
    if (cuModuleLoadData(&module, PTX) || cuModuleGetFunction(&ADD_KERNEL, module, "ADD0")) return 2;
    size_t cap = 12u << 20;
    dptr d = 0;
    printf("alloc rc=%d\n", cuMemAlloc_v2(&d, cap));
    round_trip(d, 100, 0, 0, 1);
    round_trip(d, (256u << 10) - 1, 1, 0, 2);
    round_trip(d, 256u << 10, 0, 0, 3);
    round_trip(d, (9u << 20) + 7, 0, 0, 4);
    round_trip(d, (9u << 20) + 7, 0, 1, 5);
    round_trip(d, (2u << 20) * 4 + 1, 1, 0, 6);

    /* Order with posted work: copy in, a kernel adds 5 to the first int, copy out. */
    size_t n = (3u << 20) + 1;
    unsigned char *src = pattern(n, 7), *dst = calloc(1, n);
    int first;
    memcpy(&first, src, 4);
    int r1 = cuMemcpyHtoDAsync_v2(d, src, n, 0);
    int v = 5;
    void *params[] = {&d, &v};
    int r2 = cuLaunchKernel(ADD_KERNEL, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
    int r3 = cuMemcpyDtoHAsync_v2(dst, d, n, 0);
    int got;
    memcpy(&got, dst, 4);
    printf("ordered: rc %d %d %d added %d rest same %d\n", r1, r2, r3, got - first,
           memcmp(src + 4, dst + 4, n - 4) == 0);

    /* A staged copy that runs past the allocation fails, and the next copy works. */
    unsigned char *big = pattern(4u << 20, 9);
    printf("overrun rc=%d\n", cuMemcpyHtoD_v2(d + cap - (1u << 20), big, 4u << 20) != 0);
    round_trip(d, 1u << 20, 0, 0, 10);
    printf("sync rc=%d\n", cuCtxSynchronize());
    return 0;
}
"#;

fn program() -> PathBuf {
    c_program("staged_copies_client", PROGRAM, &["-ldl"])
}

#[test]
fn pageable_copies_are_staged_exact_and_ordered() {
    let host = Host::on_region("staged")
        .driver(FakeDriver::PostedKernels)
        .region_size(32 << 20)
        .log_driver_calls()
        .start();
    let out = run_client(&mut host.client(&program()));
    let expected = [
        "init rc=0",
        "alloc rc=0",
        "sync 100: rc 0 0 same 1",
        "async 262143: rc 0 0 same 1",
        "sync 262144: rc 0 0 same 1",
        "sync 9437191: rc 0 0 same 1",
        "sync ptds 9437191: rc 0 0 same 1",
        "async 8388609: rc 0 0 same 1",
        "ordered: rc 0 0 0 added 5 rest same 1",
        "overrun rc=1",
        "sync 1048576: rc 0 0 same 1",
        "sync rc=0",
    ];
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, expected, "stderr:\n{}", out.stderr);

    let log = host.driver_log();
    let count = |prefix: &str| log.lines().filter(|l| l.starts_with(prefix)).count();
    // Whole 2 MiB chunks went through the staging's device alias: four each way for 9 MiB + 7
    // (twice) and for 8 MiB + 1, one each way for 3 MiB + 1, and the failed copy's first chunk:
    // its failure answered the wait for the next slot, so no second chunk was sent.
    let full = count("cuMemcpyAsync len=2097152") + count("cuMemcpyAsync_ptsz len=2097152");
    assert_eq!(full, 2 * 4 * 2 + 2 * 4 + 2 + 1, "{log}");
    assert_eq!(count("cuMemcpyAsync_ptsz len="), 2 * 5, "{log}");
    // Below 256 KiB the bytes travel with the request.
    assert_eq!(
        count("cuMemcpyHtoDAsync_v2 (bytes shipped) len=262143"),
        1,
        "{log}"
    );
    assert_eq!(count("cuMemcpyAsync len=262143"), 0, "{log}");
    assert_eq!(count("cuMemcpyAsync len=262144"), 2, "{log}");
    // The kernel ran between the copies, once.
    assert_eq!(count("cuLaunchKernel add 5"), 1, "{log}");
}
