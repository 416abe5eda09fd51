/* A small context model for host/tests/guest_cache.rs, compiled with libcuda.c: primary contexts
 * (reference counts and flags), the thread's current context, a context's device, kernel and
 * function attributes, a kernel's function. FAKE_CUDA_CALLS names a file that gets one line per
 * call (the function's name), so a test can count what reached the driver. Contexts are
 * 0x1000 + device; kernels are any handle, their functions handle + 0x100. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUkernel;
typedef void *CUfunction;

static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static int fake_refs[4];
static unsigned fake_flags[4];
static __thread CUcontext fake_current;
#define FAKE_ATTRS 64
static struct { uintptr_t handle; int attr; int value; } fake_attrs[FAKE_ATTRS];

static void called(const char *name) {
    const char *path = getenv("FAKE_CUDA_CALLS");
    if (!path) return;
    pthread_mutex_lock(&fake_lock);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n", name);
        fclose(f);
    }
    pthread_mutex_unlock(&fake_lock);
}

static int dev_ok(CUdevice d) { return d >= 0 && d < 4; }

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d) {
    called("cuDevicePrimaryCtxRetain");
    if (!ctx || !dev_ok(d)) return 1;
    pthread_mutex_lock(&fake_lock);
    fake_refs[d]++;
    pthread_mutex_unlock(&fake_lock);
    *ctx = (CUcontext)(uintptr_t)(0x1000 + d);
    return 0;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    called("cuDevicePrimaryCtxRelease_v2");
    if (!dev_ok(d) || fake_refs[d] == 0) return 201;
    pthread_mutex_lock(&fake_lock);
    fake_refs[d]--;
    pthread_mutex_unlock(&fake_lock);
    return 0;
}
CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned flags) {
    called("cuDevicePrimaryCtxSetFlags_v2");
    if (!dev_ok(d)) return 101;
    fake_flags[d] = flags;
    return 0;
}
CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned *flags, int *active) {
    called("cuDevicePrimaryCtxGetState");
    if (!dev_ok(d)) return 101;
    if (!flags || !active) return 1;
    *flags = fake_flags[d];
    *active = fake_refs[d] > 0;
    return 0;
}
CUresult cuCtxSetCurrent(CUcontext ctx) {
    called("cuCtxSetCurrent");
    fake_current = ctx;
    return 0;
}
CUresult cuCtxGetCurrent(CUcontext *ctx) {
    called("cuCtxGetCurrent");
    if (!ctx) return 1;
    *ctx = fake_current;
    return 0;
}
static CUresult device_of(CUcontext ctx, CUdevice *d) {
    if (!d) return 1;
    if (!ctx) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
    *d = (CUdevice)((uintptr_t)ctx - 0x1000);
    return 0;
}
CUresult cuCtxGetDevice(CUdevice *d) {
    called("cuCtxGetDevice");
    return device_of(fake_current, d);
}
CUresult cuCtxGetDevice_v2(CUdevice *d, CUcontext ctx) {
    called("cuCtxGetDevice_v2");
    return device_of(ctx ? ctx : fake_current, d);
}
static int *attr_slot(uintptr_t handle, int attr) {
    for (int i = 0; i < FAKE_ATTRS; i++)
        if (fake_attrs[i].handle == handle && fake_attrs[i].attr == attr) return &fake_attrs[i].value;
    for (int i = 0; i < FAKE_ATTRS; i++)
        if (!fake_attrs[i].handle) {
            fake_attrs[i].handle = handle;
            fake_attrs[i].attr = attr;
            fake_attrs[i].value = attr == 0 ? 1024 : 0; /* MAX_THREADS_PER_BLOCK, else 0 */
            return &fake_attrs[i].value;
        }
    return NULL;
}
/* A kernel and its functions share attributes, as in CUDA. */
static uintptr_t kernel_of(uintptr_t handle) { return handle & ~(uintptr_t)0xfff; }
CUresult cuKernelGetAttribute(int *pi, int attr, CUkernel k, CUdevice d) {
    called("cuKernelGetAttribute");
    if (!pi || !k || !dev_ok(d)) return 1;
    pthread_mutex_lock(&fake_lock);
    int *v = attr_slot(kernel_of((uintptr_t)k), attr);
    if (v) *pi = *v;
    pthread_mutex_unlock(&fake_lock);
    return v ? 0 : 2;
}
CUresult cuKernelSetAttribute(int attr, int value, CUkernel k, CUdevice d) {
    called("cuKernelSetAttribute");
    if (!k || !dev_ok(d)) return 1;
    if (attr == 8 && value > 232448) return 1; /* above the opt-in maximum */
    pthread_mutex_lock(&fake_lock);
    int *v = attr_slot(kernel_of((uintptr_t)k), attr);
    if (v) *v = value;
    pthread_mutex_unlock(&fake_lock);
    return v ? 0 : 2;
}
CUresult cuFuncGetAttribute(int *pi, int attr, CUfunction f) {
    called("cuFuncGetAttribute");
    if (!pi || !f) return 1;
    pthread_mutex_lock(&fake_lock);
    int *v = attr_slot(kernel_of((uintptr_t)f), attr);
    if (v) *pi = *v;
    pthread_mutex_unlock(&fake_lock);
    return v ? 0 : 2;
}
CUresult cuKernelGetFunction(CUfunction *f, CUkernel k) {
    called("cuKernelGetFunction");
    if (!f || !k) return 1;
    if (!fake_current) return 201;
    *f = (CUfunction)((uintptr_t)k + 0x100);
    return 0;
}

/* Limits of the (one) context: CU_LIMIT_STACK_SIZE (0) reads 1024 more than was set, as if a
 * launch had grown it. */
static size_t fake_limits[8];
CUresult cuCtxGetLimit(size_t *value, int limit) {
    called("cuCtxGetLimit");
    if (!value || limit < 0 || limit > 7) return 1;
    if (!fake_current) return 201;
    pthread_mutex_lock(&fake_lock);
    *value = fake_limits[limit] + (limit == 0 ? 1024 : 0);
    pthread_mutex_unlock(&fake_lock);
    return 0;
}
CUresult cuCtxSetLimit(int limit, size_t value) {
    called("cuCtxSetLimit");
    if (limit < 0 || limit > 7) return 1;
    if (!fake_current) return 201;
    pthread_mutex_lock(&fake_lock);
    fake_limits[limit] = value;
    pthread_mutex_unlock(&fake_lock);
    return 0;
}

/* Stream capture: a stream (any handle) is capturing between a begin and its end. A second
 * begin on a capturing stream fails (CUDA_ERROR_ILLEGAL_STATE), as does an end without one. */
#define FAKE_STREAMS 16
static uintptr_t fake_capturing[FAKE_STREAMS];
static int capture_slot(uintptr_t stream, int take) {
    for (int i = 0; i < FAKE_STREAMS; i++)
        if (fake_capturing[i] == stream) return i;
    if (!take) return -1;
    for (int i = 0; i < FAKE_STREAMS; i++)
        if (!fake_capturing[i]) return i;
    return -1;
}
CUresult cuStreamBeginCapture_v2(void *stream, int mode) {
    called("cuStreamBeginCapture_v2");
    (void)mode;
    pthread_mutex_lock(&fake_lock);
    CUresult r = 401;
    if (capture_slot((uintptr_t)stream, 0) < 0) {
        int i = capture_slot((uintptr_t)stream, 1);
        if (i >= 0) {
            fake_capturing[i] = (uintptr_t)stream;
            r = 0;
        }
    }
    pthread_mutex_unlock(&fake_lock);
    return r;
}
CUresult cuStreamEndCapture(void *stream, void **graph) {
    called("cuStreamEndCapture");
    if (!graph) return 1;
    pthread_mutex_lock(&fake_lock);
    int i = capture_slot((uintptr_t)stream, 0);
    if (i >= 0) fake_capturing[i] = 0;
    pthread_mutex_unlock(&fake_lock);
    if (i < 0) return 401;
    *graph = (void *)(uintptr_t)0x7000;
    return 0;
}
CUresult cuStreamIsCapturing(void *stream, int *status) {
    called("cuStreamIsCapturing");
    if (!status) return 1;
    pthread_mutex_lock(&fake_lock);
    *status = capture_slot((uintptr_t)stream, 0) >= 0;
    pthread_mutex_unlock(&fake_lock);
    return 0;
}

/* Unloading any library succeeds (the model keeps no code). */
CUresult cuLibraryUnload(void *library) {
    called("cuLibraryUnload");
    (void)library;
    return 0;
}
