/* Guest side of tests/vm/run-vgpu-e2e.sh: a small CUDA driver-API program run inside the QEMU
 * guest with the vgpu shim preloaded (LD_PRELOAD=libvgpu-cuda.so, soname libcuda.so.1), so
 * dlopen("libcuda.so.1") returns the shim and every call crosses the VM boundary to vgpu-host.
 *
 * Usage: cuda_probe [HOLD_SECONDS]
 *   1. waits (bounded) until the host has initialised $VGPU_REGION: the shim opens the region
 *      once per process, so a call made before the host is up would fail for good;
 *   2. prints one "E2E key=value" line per result (the runner compares them with the fake
 *      driver's values) and "E2E-DONE rc=N";
 *   3. with HOLD_SECONDS, keeps its channel open that long before exiting, so the guest can be
 *      powered off under a live client (the host's across-VM liveness rule).
 * Exit status: 0 when every call succeeded and the memory round trip compared equal. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

/* transport/src/layout.rs: Header::initialised (u32 at byte 24) is 2 once the host is ready. */
#define HEADER_MAGIC_OFFSET 0
#define HEADER_INITIALISED_OFFSET 24
#define INIT_READY 2u
#define REGION_WAIT_S 90

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The BAR must be mmapped (read(2) does not work on it, docs/vm.md). */
static int wait_for_host(const char *path) {
    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) {
        printf("E2E error=cannot open %s\n", path);
        return -1;
    }
    volatile unsigned char *h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (h == MAP_FAILED) {
        printf("E2E error=cannot mmap %s\n", path);
        return -1;
    }
    double start = now_s();
    int ready = 0;
    while (now_s() - start < REGION_WAIT_S) {
        uint64_t magic;
        uint32_t init;
        memcpy(&magic, (const void *)(h + HEADER_MAGIC_OFFSET), sizeof magic);
        memcpy(&init, (const void *)(h + HEADER_INITIALISED_OFFSET), sizeof init);
        if (memcmp(&magic, "VGPUSHM1", 8) == 0 && init == INIT_READY) {
            ready = 1;
            break;
        }
        usleep(20000);
    }
    printf("E2E region_wait_s=%.2f ready=%d\n", now_s() - start, ready);
    munmap((void *)h, 4096);
    return ready ? 0 : -1;
}

#define LOAD(name)                                                              \
    name##_t name = (name##_t)dlsym(lib, #name);                                 \
    if (!name) {                                                                \
        printf("E2E error=missing symbol %s\n", #name);                         \
        return 1;                                                               \
    }
#define CHECK(call)                                                             \
    do {                                                                        \
        CUresult r_ = (call);                                                   \
        if (r_ != 0) {                                                          \
            printf("E2E error=%s returned %d\n", #call, r_);                     \
            fails++;                                                            \
        }                                                                       \
    } while (0)

typedef CUresult (*cuInit_t)(unsigned);
typedef CUresult (*cuDriverGetVersion_t)(int *);
typedef CUresult (*cuDeviceGetCount_t)(int *);
typedef CUresult (*cuDeviceGet_t)(CUdevice *, int);
typedef CUresult (*cuDeviceGetName_t)(char *, int, CUdevice);
typedef CUresult (*cuDeviceTotalMem_v2_t)(size_t *, CUdevice);
typedef CUresult (*cuDeviceGetAttribute_t)(int *, int, CUdevice);
typedef CUresult (*cuMemAlloc_v2_t)(CUdeviceptr *, size_t);
typedef CUresult (*cuMemFree_v2_t)(CUdeviceptr);
typedef CUresult (*cuMemcpyHtoD_v2_t)(CUdeviceptr, const void *, size_t);
typedef CUresult (*cuMemcpyDtoH_v2_t)(void *, CUdeviceptr, size_t);

/* splitmix64, so every byte of the round trip is checked against an independent pattern. */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Copies `bytes` of a pattern to the device and back; returns the number of failures. */
static int round_trip(void *lib, size_t bytes, uint64_t seed) {
    int fails = 0;
    LOAD(cuMemAlloc_v2);
    LOAD(cuMemFree_v2);
    LOAD(cuMemcpyHtoD_v2);
    LOAD(cuMemcpyDtoH_v2);
    unsigned char *out = malloc(bytes), *back = malloc(bytes);
    if (!out || !back) return 1;
    for (size_t i = 0; i < bytes; i++) out[i] = (unsigned char)(mix(seed + i / 8) >> (8 * (i % 8)));
    memset(back, 0xA5, bytes);
    CUdeviceptr d = 0;
    CHECK(cuMemAlloc_v2(&d, bytes));
    if (fails == 0) {
        CHECK(cuMemcpyHtoD_v2(d, out, bytes));
        CHECK(cuMemcpyDtoH_v2(back, d, bytes));
        CHECK(cuMemFree_v2(d));
        /* A freed pointer must now be refused by the (fake) driver on the host. */
        if (cuMemFree_v2(d) == 0) {
            printf("E2E error=double cuMemFree_v2 succeeded\n");
            fails++;
        }
    }
    int equal = fails == 0 && memcmp(out, back, bytes) == 0;
    printf("E2E memcpy_round_trip bytes=%zu equal=%d\n", bytes, equal);
    free(out);
    free(back);
    return fails + !equal;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int hold = argc > 1 ? atoi(argv[1]) : 0;
    const char *region = getenv("VGPU_REGION");
    printf("E2E pid=%d\n", (int)getpid());
    if (!region || wait_for_host(region) != 0) {
        printf("E2E-DONE rc=2\n");
        return 2;
    }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        printf("E2E error=dlopen: %s\nE2E-DONE rc=2\n", dlerror());
        return 2;
    }
    Dl_info info;
    if (dladdr(dlsym(lib, "cuInit"), &info) && info.dli_fname)
        printf("E2E libcuda=%s\n", info.dli_fname);
    LOAD(cuInit);
    LOAD(cuDriverGetVersion);
    LOAD(cuDeviceGetCount);
    LOAD(cuDeviceGet);
    LOAD(cuDeviceGetName);
    LOAD(cuDeviceTotalMem_v2);
    LOAD(cuDeviceGetAttribute);

    int fails = 0, version = 0, count = 0, major = -1, minor = -1;
    CUdevice dev = -1;
    char name[256] = "";
    size_t total = 0;
    double t0 = now_s();
    CHECK(cuInit(0));
    printf("E2E cuInit_ms=%.1f\n", (now_s() - t0) * 1e3);
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGetCount(&count));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetName(name, (int)sizeof name, dev));
    CHECK(cuDeviceTotalMem_v2(&total, dev));
    CHECK(cuDeviceGetAttribute(&major, 75, dev));
    CHECK(cuDeviceGetAttribute(&minor, 76, dev));
    printf("E2E driver_version=%d\n", version);
    printf("E2E device_count=%d\n", count);
    printf("E2E device_name=%s\n", name);
    printf("E2E total_mem=%zu\n", total);
    printf("E2E compute_capability=%d.%d\n", major, minor);
    /* An out-of-range ordinal must come back as the driver's error, not succeed. */
    CUdevice bad = -1;
    CUresult r = cuDeviceGet(&bad, count);
    printf("E2E device_get_out_of_range=%d\n", r);
    if (r == 0) fails++;

    fails += round_trip(lib, 4096, 1);
    fails += round_trip(lib, 3u << 20, 2); /* larger than a ring slot: takes the bulk path */

    int rc = fails ? 1 : 0;
    printf("E2E-DONE rc=%d\n", rc);
    fflush(stdout);
    if (hold > 0) sleep((unsigned)hold); /* the channel (and its heartbeat) stay open */
    return rc;
}
