/*
 * vm_probe MODE …: the guest-side measurements of scripts/gpu-vm.sh (a GPU-less QEMU guest whose
 * CUDA calls cross ivshmem to vgpu-host). It reaches the driver through dlopen("libcuda.so.1") and
 * dlsym, so it runs against the real driver, the shim (preloaded) and the fake driver of the VM
 * tests alike: a function the driver lacks is skipped where it is optional.
 *
 *   vm_probe info               driver version, devices, name, memory, compute capability
 *                               (deterministic: diffed against a native run)
 *   vm_probe rtt N              N synchronous cuStreamSynchronize(0) calls, each timed (after
 *                               N/10 untimed): prints one `rtt …` line of percentiles in µs
 *   vm_probe until-fail SECONDS calls cuStreamSynchronize(0) in a loop; prints `looping` once it
 *                               has made 1000 calls, then, at the first failure, the error and
 *                               the time since the last success, and exits 0; exits 1 if nothing
 *                               failed within SECONDS
 *   vm_probe hold MIB           cuMemAlloc MIB MiB, touches it, prints `allocated MIB MiB pid=PID`,
 *                               then sleeps until killed
 *
 * A context (the primary context of device 0) is made current when the driver has the calls
 * for it; the fake driver has not, and needs none. Exit status: 0 on success, 1 on a failed call
 * (printed as `FAIL call -> NAME (code)`), 2 for bad usage.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef CUresult (*init_fn)(unsigned);
typedef CUresult (*int_out_fn)(int *);
typedef CUresult (*device_get_fn)(CUdevice *, int);
typedef CUresult (*device_name_fn)(char *, int, CUdevice);
typedef CUresult (*total_mem_fn)(size_t *, CUdevice);
typedef CUresult (*attribute_fn)(int *, CUdevice_attribute, CUdevice);
typedef CUresult (*ctx_retain_fn)(CUcontext *, CUdevice);
typedef CUresult (*ctx_set_fn)(CUcontext);
typedef CUresult (*stream_sync_fn)(CUstream);
typedef CUresult (*mem_alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*memset_fn)(CUdeviceptr, unsigned char, size_t);
typedef CUresult (*error_name_fn)(CUresult, const char **);

static void *lib;
static error_name_fn error_name;

static void *sym(const char *name) { return dlsym(lib, name); }

static const char *name_of(CUresult r) {
    const char *n = NULL;
    if (error_name == NULL || error_name(r, &n) != CUDA_SUCCESS || n == NULL) return "?";
    return n;
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        CUresult r_ = (call);                                                         \
        if (r_ != CUDA_SUCCESS) {                                                     \
            printf("FAIL %s -> %s (%d)\n", #call, name_of(r_), (int)r_);              \
            fflush(stdout);                                                           \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static void *need(const char *name) {
    void *f = sym(name);
    if (f == NULL) {
        printf("FAIL the driver has no %s\n", name);
        exit(1);
    }
    return f;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* cuInit, then the primary context of device 0 made current where the driver has the calls. */
static void setup(void) {
    init_fn init = (init_fn)need("cuInit");
    CHECK(init(0));
    device_get_fn device_get = (device_get_fn)need("cuDeviceGet");
    CUdevice dev;
    CHECK(device_get(&dev, 0));
    ctx_retain_fn retain = (ctx_retain_fn)sym("cuDevicePrimaryCtxRetain");
    ctx_set_fn set = (ctx_set_fn)sym("cuCtxSetCurrent");
    CUcontext ctx;
    if (retain != NULL && set != NULL && retain(&ctx, dev) == CUDA_SUCCESS) CHECK(set(ctx));
}

static int info(void) {
    init_fn init = (init_fn)need("cuInit");
    CHECK(init(0));
    int version = 0, count = 0;
    CHECK(((int_out_fn)need("cuDriverGetVersion"))(&version));
    CHECK(((int_out_fn)need("cuDeviceGetCount"))(&count));
    printf("driver_version %d\ndevice_count %d\n", version, count);
    for (int d = 0; d < count; d++) {
        CUdevice dev;
        char name[256];
        size_t total = 0;
        int major = 0, minor = 0;
        CHECK(((device_get_fn)need("cuDeviceGet"))(&dev, d));
        CHECK(((device_name_fn)need("cuDeviceGetName"))(name, (int)sizeof name, dev));
        CHECK(((total_mem_fn)need("cuDeviceTotalMem_v2"))(&total, dev));
        attribute_fn attr = (attribute_fn)need("cuDeviceGetAttribute");
        CHECK(attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        CHECK(attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
        printf("device %d name %s\ndevice %d total_mem %zu\ndevice %d compute_capability %d.%d\n", d,
               name, d, total, d, major, minor);
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rtt(long n) {
    if (n < 10) n = 10;
    setup();
    stream_sync_fn sync = (stream_sync_fn)need("cuStreamSynchronize");
    for (long i = 0; i < n / 10; i++) CHECK(sync(NULL));
    double *t = malloc(sizeof(double) * (size_t)n);
    if (t == NULL) return 1;
    double sum = 0;
    for (long i = 0; i < n; i++) {
        double t0 = now_us();
        CHECK(sync(NULL));
        t[i] = now_us() - t0;
        sum += t[i];
    }
    qsort(t, (size_t)n, sizeof(double), cmp_double);
#define PCT(p) t[(size_t)((double)(n - 1) * (p))]
    printf("rtt call=cuStreamSynchronize n=%ld min_us=%.2f p50_us=%.2f p90_us=%.2f p99_us=%.2f "
           "max_us=%.2f mean_us=%.2f\n",
           n, t[0], PCT(0.50), PCT(0.90), PCT(0.99), t[n - 1], sum / (double)n);
#undef PCT
    free(t);
    return 0;
}

static int until_fail(double seconds) {
    setup();
    stream_sync_fn sync = (stream_sync_fn)need("cuStreamSynchronize");
    double start = now_us(), last_ok = start;
    long ok = 0;
    while (now_us() - start < seconds * 1e6) {
        CUresult r = sync(NULL);
        double now = now_us();
        if (r != CUDA_SUCCESS) {
            printf("first_failure code=%d name=%s after_ms=%.1f ok_calls=%ld\n", (int)r, name_of(r),
                   (now - last_ok) / 1e3, ok);
            return 0;
        }
        last_ok = now;
        if (++ok == 1000) {
            printf("looping\n");
            fflush(stdout);
        }
    }
    printf("no failure within %.0f s (%ld calls)\n", seconds, ok);
    return 1;
}

static int hold(size_t mib) {
    setup();
    CUdeviceptr p;
    CHECK(((mem_alloc_fn)need("cuMemAlloc_v2"))(&p, mib << 20));
    CHECK(((memset_fn)need("cuMemsetD8_v2"))(p, 0xA5, mib << 20));
    CHECK(((stream_sync_fn)need("cuStreamSynchronize"))(NULL));
    printf("allocated %zu MiB pid=%d\n", mib, (int)getpid());
    fflush(stdout);
    for (;;) pause();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "info";
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (lib == NULL) {
        printf("FAIL dlopen libcuda.so.1: %s\n", dlerror());
        return 1;
    }
    error_name = (error_name_fn)sym("cuGetErrorName");
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "info") == 0) return info();
    if (strcmp(mode, "rtt") == 0) return rtt(argc > 2 ? atol(argv[2]) : 20000);
    if (strcmp(mode, "until-fail") == 0) return until_fail(argc > 2 ? atof(argv[2]) : 60);
    if (strcmp(mode, "hold") == 0 && argc > 2) return hold(strtoull(argv[2], NULL, 10));
    fprintf(stderr, "usage: vm_probe info | rtt N | until-fail SECONDS | hold MIB\n");
    return 2;
}
