/* A fake CUDA driver for tests on machines without a GPU. Built at test time with `cc -shared`.
 * FAKE_CUDA_DEVICES (default 1) sets the device count; 0 makes cuInit fail with
 * CUDA_ERROR_NO_DEVICE (100), like the real driver on a machine without a GPU.
 * cuMemAlloc_v2/cuMemFree_v2/cuMemcpyHtoD_v2/cuMemcpyDtoH_v2 keep "device" memory on the heap;
 * host memory registration and unified copies are at the end (zero-copy tests). */
#include <pthread.h>
#include <sys/mman.h>
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
static int fake_reg_ok(CUdeviceptr p, size_t len);
/* With unified addressing a device pointer may also be the device pointer of registered host
 * memory (its host address here), which the copies reach as the DMA engine would. */
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
    if (bytes && !src) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(dst, bytes) || fake_reg_ok(dst, bytes);
    if (ok && bytes) memcpy((void *)(uintptr_t)dst, src, bytes);
    pthread_mutex_unlock(&fake_allocs_lock);
    return ok ? 0 : 1;
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
    if (bytes && !dst) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(src, bytes) || fake_reg_ok(src, bytes);
    if (ok && bytes) memcpy(dst, (const void *)(uintptr_t)src, bytes);
    pthread_mutex_unlock(&fake_allocs_lock);
    return ok ? 0 : 1;
}

/* Host memory registration (zero-copy pinned memory, host/tests/zero_copy.rs). A registered
 * range's device pointer is its host address; copies and memsets accept device allocations
 * and registered ranges. FAKE_CUDA_LOG names a file that gets one line per registration,
 * unregistration and copy, so tests can tell which path a copy took. */
#include <stdio.h>

#define FAKE_MAX_REGS 256
static struct { uintptr_t base; size_t size; } fake_regs[FAKE_MAX_REGS];

/* `fmt` takes one or two %llu; an unused second value is ignored, as C allows. */
static void fake_log(const char *fmt, unsigned long long a, unsigned long long b) {
    const char *path = getenv("FAKE_CUDA_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, fmt, a, b);
    fputc('\n', f);
    fclose(f);
}

/* Whether [p, p+len) lies inside one registered range; the caller holds the lock. */
static int fake_reg_ok(CUdeviceptr p, size_t len) {
    for (int i = 0; i < FAKE_MAX_REGS; i++) {
        uintptr_t b = fake_regs[i].base;
        if (b && p >= b && p - b <= fake_regs[i].size && len <= fake_regs[i].size - (p - b))
            return 1;
    }
    return 0;
}

CUresult cuMemHostRegister_v2(void *p, size_t bytes, unsigned int flags) {
    if (!p || bytes == 0) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    if (fake_reg_ok((CUdeviceptr)(uintptr_t)p, 1)) {
        pthread_mutex_unlock(&fake_allocs_lock);
        return 712; /* CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED */
    }
    for (int i = 0; i < FAKE_MAX_REGS; i++) {
        if (!fake_regs[i].base) {
            fake_regs[i].base = (uintptr_t)p;
            fake_regs[i].size = bytes;
            pthread_mutex_unlock(&fake_allocs_lock);
            /* Touch every page, as pinning does: a range the process cannot map fails here. */
            for (size_t at = 0; at < bytes; at += 4096) ((volatile char *)p)[at];
            fake_log("cuMemHostRegister_v2 flags=%llu len=%llu", flags, bytes);
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    return 2;
}
CUresult cuMemHostUnregister(void *p) {
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_REGS; i++) {
        if (p && fake_regs[i].base == (uintptr_t)p) {
            unsigned long long size = fake_regs[i].size;
            fake_regs[i].base = 0;
            pthread_mutex_unlock(&fake_allocs_lock);
            fake_log("cuMemHostUnregister len=%llu", size, 0);
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    return 713; /* CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED */
}
CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *d, void *p, unsigned int flags) {
    if (!d || flags) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_reg_ok((CUdeviceptr)(uintptr_t)p, 1);
    pthread_mutex_unlock(&fake_allocs_lock);
    if (!ok) return 1;
    *d = (CUdeviceptr)(uintptr_t)p;
    return 0;
}
/* CU_POINTER_ATTRIBUTE_MEMORY_TYPE (2) only: DEVICE (2) for allocations, HOST (1) for
 * registered ranges, CUDA_ERROR_INVALID_VALUE for anything else. */
CUresult cuPointerGetAttribute(void *data, int attribute, CUdeviceptr p) {
    if (!data || attribute != 2) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int kind = fake_range_ok(p, 1) ? 2 : fake_reg_ok(p, 1) ? 1 : 0;
    pthread_mutex_unlock(&fake_allocs_lock);
    if (!kind) return 1;
    *(unsigned int *)data = (unsigned int)kind;
    return 0;
}
/* Several attributes of a registered range: CONTEXT (1) 0x1000, MEMORY_TYPE (2) HOST,
 * DEVICE_ORDINAL (9) 0, SYNC_MEMOPS (6) 1; each call logged with its count. */
CUresult cuPointerGetAttributes(unsigned n, int *attrs, void **data, CUdeviceptr p) {
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_reg_ok(p, 1);
    pthread_mutex_unlock(&fake_allocs_lock);
    fake_log("cuPointerGetAttributes n=%llu", n, 0);
    if (!ok || !attrs || !data) return 1;
    for (unsigned i = 0; i < n; i++) {
        if (!data[i]) continue;
        switch (attrs[i]) {
        case 1: *(void **)data[i] = (void *)(uintptr_t)0x1000; break;
        case 2: *(unsigned *)data[i] = 1; break;
        case 6: *(unsigned *)data[i] = 1; break;
        case 9: *(int *)data[i] = 0; break;
        default: break;
        }
    }
    return 0;
}
static CUresult fake_copy(const char *name, CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = (fake_range_ok(dst, bytes) || fake_reg_ok(dst, bytes)) &&
             (fake_range_ok(src, bytes) || fake_reg_ok(src, bytes));
    if (ok && bytes) memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, bytes);
    pthread_mutex_unlock(&fake_allocs_lock);
    fake_log(name, bytes, 0);
    return ok ? 0 : 1;
}
CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return fake_copy("cuMemcpy len=%llu", dst, src, bytes);
}
CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return fake_copy("cuMemcpy_ptds len=%llu", dst, src, bytes);
}
CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void *stream) {
    (void)stream;
    return fake_copy("cuMemcpyAsync len=%llu", dst, src, bytes);
}
CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void *stream) {
    (void)stream;
    return fake_copy("cuMemcpyAsync_ptsz len=%llu", dst, src, bytes);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t bytes, void *stream) {
    (void)stream;
    fake_log("cuMemcpyHtoDAsync_v2 (bytes shipped) len=%llu", bytes, 0);
    return cuMemcpyHtoD_v2(dst, src, bytes);
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t bytes, void *stream) {
    (void)stream;
    fake_log("cuMemcpyDtoHAsync_v2 (bytes shipped) len=%llu", bytes, 0);
    return cuMemcpyDtoH_v2(dst, src, bytes);
}
CUresult cuStreamSynchronize(void *stream) { (void)stream; return 0; }
/* Streams: handles count up from 0x6000 in steps of 0x100. */
static unsigned long long fake_streams = 0x6000;
CUresult cuStreamCreate(void **stream, unsigned flags) {
    (void)flags;
    if (!stream) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *stream = (void *)(uintptr_t)fake_streams;
    fake_streams += 0x100;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuStreamDestroy_v2(void *stream) {
    return (uintptr_t)stream >= 0x6000 && (uintptr_t)stream < fake_streams ? 0 : 400;
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(dst, n) || fake_reg_ok(dst, n);
    if (ok && n) memset((void *)(uintptr_t)dst, value, n);
    pthread_mutex_unlock(&fake_allocs_lock);
    fake_log("cuMemsetD8_v2 len=%llu", n, 0);
    return ok ? 0 : 1;
}

/* Events, for the guest's staged copies: copies here finish when they are called, so an event is
 * complete once recorded; FAKE_CUDA_LOG gets a line per wait. Handles count up from 0xE000. */
static unsigned long long fake_events = 0xE000;
CUresult cuEventCreate(void **event, unsigned flags) {
    (void)flags;
    if (!event) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *event = (void *)(uintptr_t)fake_events++;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
static int fake_event_ok(void *event) {
    return (uintptr_t)event >= 0xE000 && (uintptr_t)event < fake_events;
}
CUresult cuEventRecord(void *event, void *stream) {
    (void)stream;
    return fake_event_ok(event) ? 0 : 400;
}
CUresult cuEventRecord_ptsz(void *event, void *stream) { return cuEventRecord(event, stream); }
CUresult cuEventSynchronize(void *event) {
    fake_log("cuEventSynchronize", 0, 0);
    return fake_event_ok(event) ? 0 : 400;
}
CUresult cuEventDestroy_v2(void *event) { return fake_event_ok(event) ? 0 : 400; }
/* Every thread has one context, unless a richer fake (contexts.c) says otherwise. */
__attribute__((weak)) CUresult cuCtxGetCurrent(void **ctx) {
    if (!ctx) return 1;
    *ctx = (void *)0xC0;
    return 0;
}

/* Module and library loads: accepted without reading the image (a real driver parses it); each
 * logged with the first byte, so a test sees which images reached the driver. */
CUresult cuModuleLoadData(void **module, const void *image) {
    if (!module || !image) return 1;
    fake_log("cuModuleLoadData first byte %llu", *(const unsigned char *)image, 0);
    *module = (void *)(uintptr_t)0x4d00;
    return 0;
}
/* Functions and kernels by name: the name is the handle in hex ("ADD0" is 0xADD0), so a test
 * gets the fake kernels below the way a real program does, and the host's gate records them. */
CUresult cuModuleGetFunction(void **func, void *module, const char *name) {
    if (!func || !name) return 1;
    if (module != (void *)(uintptr_t)0x4d00) return 400;
    *func = (void *)(uintptr_t)strtoull(name, NULL, 16);
    return *func ? 0 : 500;
}
/* The fake module has one function, the fake kernel 0xADD0 (`add`). */
CUresult cuModuleGetFunctionCount(unsigned *count, void *module) {
    if (!count) return 1;
    if (module != (void *)(uintptr_t)0x4d00) return 400;
    *count = 1;
    return 0;
}
CUresult cuModuleEnumerateFunctions(void **functions, unsigned n, void *module) {
    if (!functions && n) return 1;
    fake_log("cuModuleEnumerateFunctions n %llu", n, 0);
    if (module != (void *)(uintptr_t)0x4d00) return 400;
    if (n != 1) return 1;
    functions[0] = (void *)(uintptr_t)0xADD0;
    return 0;
}
CUresult cuModuleUnload(void *module) {
    return module == (void *)(uintptr_t)0x4d00 ? 0 : 400;
}
CUresult cuLibraryGetKernel(void **kernel, void *library, const char *name) {
    if (!kernel || !name) return 1;
    if (library != (void *)(uintptr_t)0x4c00) return 400;
    *kernel = (void *)(uintptr_t)strtoull(name, NULL, 16);
    return *kernel ? 0 : 500;
}
CUresult cuLibraryLoadData(void **library, const void *code, void *jit_options, void **jit_values,
                           unsigned jit_count, void *lib_options, void **lib_values,
                           unsigned lib_count) {
    (void)jit_options; (void)jit_values; (void)jit_count;
    (void)lib_options; (void)lib_values; (void)lib_count;
    if (!library || !code) return 1;
    fake_log("cuLibraryLoadData first byte %llu", *(const unsigned char *)code, 0);
    *library = (void *)(uintptr_t)0x4c00;
    return 0;
}

/* `__managed__` variables of the library (host/tests/managed.rs): "g_counter" (an int, 7 at
 * load) and "g_pair" (two ints, 1 and 2) share one page of "managed memory", registered like
 * mapped pinned memory so that memsets and copies reach it as a kernel would; neither starts
 * the page. Other names: CUDA_ERROR_NOT_FOUND (500); another library: INVALID_HANDLE (400). */
static unsigned char *fake_managed_page;
CUresult cuLibraryGetManaged(CUdeviceptr *dptr, size_t *bytes, void *library, const char *name) {
    if (!name) return 1;
    if (library != (void *)(uintptr_t)0x4c00) return 400;
    size_t offset, size;
    if (!strcmp(name, "g_counter")) { offset = 8; size = 4; }
    else if (!strcmp(name, "g_pair")) { offset = 16; size = 8; }
    else return 500;
    pthread_mutex_lock(&fake_allocs_lock);
    if (!fake_managed_page) {
        void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        int slot = -1;
        for (int i = 0; i < FAKE_MAX_REGS && m != MAP_FAILED; i++) {
            if (!fake_regs[i].base) { slot = i; break; }
        }
        if (slot < 0) {
            pthread_mutex_unlock(&fake_allocs_lock);
            return 2;
        }
        fake_regs[slot].base = (uintptr_t)m;
        fake_regs[slot].size = 4096;
        fake_managed_page = m;
        ((int *)(fake_managed_page + 8))[0] = 7;
        ((int *)(fake_managed_page + 16))[0] = 1;
        ((int *)(fake_managed_page + 16))[1] = 2;
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    fake_log("cuLibraryGetManaged len=%llu", size, 0);
    if (dptr) *dptr = (CUdeviceptr)(uintptr_t)(fake_managed_page + offset);
    if (bytes) *bytes = size;
    return 0;
}

/* Mapped pinned memory (the mirror of DEVICEMAP memory over TCP, host/tests/mirror.rs):
 * cuMemHostAlloc maps fresh pages and registers them, so the device pointer is the host address
 * and memsets and copies reach them as a kernel would; each alloc and free is logged. */
CUresult cuMemHostAlloc(void **p, size_t bytes, unsigned int flags) {
    if (!p || bytes == 0) return 1;
    void *m = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 2;
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_REGS; i++) {
        if (!fake_regs[i].base) {
            fake_regs[i].base = (uintptr_t)m;
            fake_regs[i].size = bytes;
            pthread_mutex_unlock(&fake_allocs_lock);
            memset(m, 0xEE, bytes); /* not zero: the host must clear it */
            fake_log("cuMemHostAlloc flags=%llu len=%llu", flags, bytes);
            *p = m;
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    munmap(m, bytes);
    return 2;
}
CUresult cuMemFreeHost(void *p) {
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_REGS; i++) {
        if (p && fake_regs[i].base == (uintptr_t)p) {
            size_t size = fake_regs[i].size;
            fake_regs[i].base = 0;
            pthread_mutex_unlock(&fake_allocs_lock);
            munmap(p, size);
            fake_log("cuMemFreeHost len=%llu", size, 0);
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    return 1;
}
/* A "kernel" writing device memory: fills device allocations and mapped pinned memory. */
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned value, size_t n) {
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = n <= ((size_t)-1) / 4 && (fake_range_ok(dst, n * 4) || fake_reg_ok(dst, n * 4));
    if (ok) for (size_t i = 0; i < n; i++) ((unsigned *)(uintptr_t)dst)[i] = value;
    pthread_mutex_unlock(&fake_allocs_lock);
    return ok ? 0 : 1;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return fake_copy("cuMemcpyDtoD_v2 len=%llu", dst, src, bytes);
}
/* Done at once: this fake's streams have no queue. */
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, void *stream) {
    (void)stream;
    return fake_copy("cuMemcpyDtoDAsync_v2 len=%llu", dst, src, bytes);
}
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuStreamQuery(void *stream) { (void)stream; return 0; }
CUresult cuEventQuery(void *event) { return fake_event_ok(event) ? 0 : 400; }

/* Managed-memory calls: this fake has no managed memory, and registered or pinned host memory is
 * not managed memory, so, like the real driver, it refuses them (CUDA_ERROR_INVALID_VALUE). The
 * host must never send them for the memory that stands in for managed memory: each reaching
 * here is logged. */
typedef struct { unsigned type; int id; } CUmemLocation;
CUresult cuMemPrefetchAsync(CUdeviceptr p, size_t n, int device, void *stream) {
    (void)device; (void)stream;
    fake_log("cuMemPrefetchAsync reached the driver len=%llu at=%llu", n, p);
    return 1;
}
CUresult cuMemPrefetchAsync_v2(CUdeviceptr p, size_t n, CUmemLocation loc, unsigned flags,
                               void *stream) {
    (void)loc; (void)flags; (void)stream;
    fake_log("cuMemPrefetchAsync_v2 reached the driver len=%llu at=%llu", n, p);
    return 1;
}
CUresult cuMemAdvise(CUdeviceptr p, size_t n, unsigned advice, int device) {
    (void)advice; (void)device;
    fake_log("cuMemAdvise reached the driver len=%llu at=%llu", n, p);
    return 1;
}
CUresult cuMemAdvise_v2(CUdeviceptr p, size_t n, unsigned advice, CUmemLocation loc) {
    (void)advice; (void)loc;
    fake_log("cuMemAdvise_v2 reached the driver len=%llu at=%llu", n, p);
    return 1;
}
CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned flags) {
    (void)p; (void)flags;
    fake_log("cuMemAllocManaged reached the driver len=%llu", n, 0);
    return 801; /* CUDA_ERROR_NOT_SUPPORTED: this fake has no managed memory */
}
CUresult cuStreamAttachMemAsync(void *stream, CUdeviceptr p, size_t n, unsigned flags) {
    (void)stream; (void)flags;
    fake_log("cuStreamAttachMemAsync reached the driver len=%llu at=%llu", n, p);
    return 1;
}
/* The range of a device allocation; CUDA_ERROR_NOT_FOUND (500) for anything else. */
CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p) {
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_MAX_ALLOCS; i++) {
        uintptr_t b = fake_allocs[i].base;
        if (b && p >= b && p - b < fake_allocs[i].size) {
            if (base) *base = b;
            if (size) *size = fake_allocs[i].size;
            pthread_mutex_unlock(&fake_allocs_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    return 500;
}

/* CUDA IPC: a handle is "FAKEIPC\0" and the address, the rest zero, as a driver's handle names
 * its allocation by ids anyone who saw one could copy. Opening logs what the driver was given,
 * so a test can tell a handle the host unsealed from one it passed through. */
typedef struct { char reserved[64]; } CUipcMemHandle;
CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p) {
    if (!h) return 1;
    memset(h, 0, sizeof *h);
    memcpy(h->reserved, "FAKEIPC", 8);
    memcpy(h->reserved + 8, &p, sizeof p);
    fake_log("cuIpcGetMemHandle %llu", p, 0);
    return 0;
}
CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned flags) {
    (void)flags;
    if (!p) return 1;
    if (memcmp(h.reserved, "FAKEIPC", 8) != 0) {
        fake_log("cuIpcOpenMemHandle_v2 refused a handle it never made", 0, 0);
        return 1;
    }
    memcpy(p, h.reserved + 8, sizeof *p);
    fake_log("cuIpcOpenMemHandle_v2 opened %llu", *p, 0);
    return 0;
}
