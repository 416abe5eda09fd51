/* The cost of the queries a decoding PyTorch makes thousands of times per token, answered from
 * the guest's kept values (host/tests/guest_cache.rs, `kept_answer_rate`, ignored by default).
 * With the shim preloaded it measures the shim; run directly against the fake driver it
 * measures a plain call into a shared library, the floor. Prints one line per query:
 * "<name> <ns per call>". */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;

static void *lib;
static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) { fprintf(stderr, "missing %s\n", name); exit(2); }
    return p;
}
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
#define TIME(name, call) do { \
    CUresult r_ = 0; \
    for (long i = 0; i < n / 10; i++) r_ |= (call); \
    double t0_ = now(); \
    for (long i = 0; i < n; i++) r_ |= (call); \
    double t1_ = now(); \
    printf("%s %.1f rc=%d\n", name, (t1_ - t0_) / n, r_); \
} while (0)

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    CUresult (*init)(unsigned) = sym("cuInit");
    CUresult (*retain)(CUcontext *, CUdevice) = sym("cuDevicePrimaryCtxRetain");
    CUresult (*setCurrent)(CUcontext) = sym("cuCtxSetCurrent");
    CUresult (*getCurrent)(CUcontext *) = sym("cuCtxGetCurrent");
    CUresult (*getDevice2)(CUdevice *, CUcontext) = sym("cuCtxGetDevice_v2");
    CUresult (*getState)(CUdevice, unsigned *, int *) = sym("cuDevicePrimaryCtxGetState");
    CUresult (*isCapturing)(void *, int *) = sym("cuStreamIsCapturing");
    CUcontext ctx = NULL, cur = NULL;
    CUdevice dev = -1;
    unsigned flags = 0;
    int active = 0, st = 0;
    if (init(0) || retain(&ctx, 0) || setCurrent(ctx)) { fprintf(stderr, "setup failed\n"); return 1; }
    TIME("cuCtxGetCurrent", getCurrent(&cur));
    TIME("cuCtxGetDevice_v2", getDevice2(&dev, NULL));
    TIME("cuDevicePrimaryCtxGetState", getState(0, &flags, &active));
    TIME("cuStreamIsCapturing", isCapturing(NULL, &st));
    return 0;
}
