/* A fake CUDA driver for tests on machines without a GPU. Built at test time with `cc -shared`.
 * FAKE_CUDA_DEVICES (default 1) sets the device count; 0 makes cuInit fail with
 * CUDA_ERROR_NO_DEVICE (100), like the real driver on a machine without a GPU.
 * cuMemAlloc_v2/cuMemFree_v2/cuMemcpyHtoD_v2/cuMemcpyDtoH_v2 keep "device" memory on the heap. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct { char bytes[16]; } CUuuid;

static int device_count(void) {
    const char *s = getenv("FAKE_CUDA_DEVICES");
    /* Like the real driver, an empty CUDA_VISIBLE_DEVICES hides every device. */
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible && !*visible) return 0;
    return s ? atoi(s) : 1;
}

/* FAKE_CUDA_INIT_MS makes cuInit take that long, like the real driver (100-300 ms). */
CUresult cuInit(unsigned int flags) {
    (void)flags;
    const char *ms = getenv("FAKE_CUDA_INIT_MS");
    if (ms) usleep((useconds_t)atoi(ms) * 1000);
    return device_count() > 0 ? 0 : 100;
}
CUresult cuDriverGetVersion(int *v) { if (!v) return 1; *v = 12080; return 0; }
CUresult cuDeviceGetCount(int *n) { if (!n) return 1; *n = device_count(); return 0; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (!d || ordinal < 0 || ordinal >= device_count()) return 101;
    *d = ordinal;
    return 0;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    if (!name || len <= 0 || d < 0 || d >= device_count()) return 1;
    strncpy(name, "Fake GPU", (size_t)len - 1);
    name[len - 1] = 0;
    return 0;
}
CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d) {
    if (!uuid || d < 0 || d >= device_count()) return 1;
    for (int i = 0; i < 16; i++) uuid->bytes[i] = (char)(0x10 * (d + 1) + i);
    return 0;
}
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
    if (!bytes || d < 0 || d >= device_count()) return 1;
    *bytes = (size_t)80 << 30;
    return 0;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice d) {
    if (!value || d < 0 || d >= device_count()) return 1;
    switch (attribute) {
    case 75: *value = 9; return 0;  /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *value = 0; return 0;  /* COMPUTE_CAPABILITY_MINOR */
    default: *value = 0; return 0;
    }
}

/* Device memory, for round trips through the shim (tests/vm/run-vgpu-e2e.sh). "Device" memory is
 * host heap memory; a CUdeviceptr is its address. Every pointer and range is checked against the
 * table of live allocations, so a forwarded pointer or length that is wrong fails with
 * CUDA_ERROR_INVALID_VALUE (1) instead of touching memory it should not. No context is needed
 * (the real driver wants one; this fake does not model contexts). */
typedef unsigned long long CUdeviceptr;

#define FAKE_MAX_ALLOCS 256
static struct { uintptr_t base; size_t size; } fake_allocs[FAKE_MAX_ALLOCS];
static pthread_mutex_t fake_allocs_lock = PTHREAD_MUTEX_INITIALIZER;

/* Whether [p, p+len) lies inside one live allocation; the caller holds the lock. */
static int fake_range_ok(CUdeviceptr p, size_t len) {
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++) {
        uintptr_t b = fake_allocs[i].base;
        if (b && p >= b && p - b <= fake_allocs[i].size && len <= fake_allocs[i].size - (p - b))
            return 1;
    }
    return 0;
}

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    if (!dptr || bytes == 0) return 1;
    void *mem = calloc(1, bytes);
    if (!mem) return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++) {
        if (!fake_allocs[i].base) {
            fake_allocs[i].base = (uintptr_t)mem;
            fake_allocs[i].size = bytes;
            pthread_mutex_unlock(&fake_allocs_lock);
            *dptr = (CUdeviceptr)(uintptr_t)mem;
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    free(mem);
    return 2;
}
CUresult cuMemFree_v2(CUdeviceptr dptr) {
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++) {
        if (dptr && fake_allocs[i].base == dptr) {
            fake_allocs[i].base = 0;
            pthread_mutex_unlock(&fake_allocs_lock);
            free((void *)(uintptr_t)dptr);
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    return 1;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
    if (bytes && !src) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(dst, bytes);
    if (ok && bytes) memcpy((void *)(uintptr_t)dst, src, bytes);
    pthread_mutex_unlock(&fake_allocs_lock);
    return ok ? 0 : 1;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
    if (bytes && !dst) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(src, bytes);
    if (ok && bytes) memcpy(dst, (const void *)(uintptr_t)src, bytes);
    pthread_mutex_unlock(&fake_allocs_lock);
    return ok ? 0 : 1;
}
