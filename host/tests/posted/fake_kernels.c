/*
 * The fake driver (fake_driver/libcuda.c, included whole) plus what the posted-call tests need:
 * "kernels" that run on the host, so the order of posted calls is visible in memory.
 *
 * - Function handle 0xADD0 is `add(int *p, int v)`: *p += v (parameters laid out 8 + 4 bytes,
 *   reported by cuFuncGetParamInfo; given as kernelParams or as an `extra` buffer). FAKE_CUDA_LAUNCH_US makes each such launch take that long.
 * - Function handle 0x1000 is a kernel that does nothing (the benchmark's launch).
 * - Any other handle fails with CUDA_ERROR_INVALID_HANDLE (400); a zero grid dimension with
 *   CUDA_ERROR_INVALID_VALUE (1).
 * - cuMemsetD32Async fills device allocations (through the included cuMemsetD32_v2);
 *   synchronisation calls succeed.
 * - cuMemGetInfo_v2: a card of 80 GiB with 70 GiB free.
 * - cuCtxCreate_v2/cuCtxDestroy_v2: numbered contexts, nothing behind them.
 */
#include "../fake_driver/libcuda.c"
#include <unistd.h>

#define ADD_KERNEL ((void *)0xADD0)
#define NOOP_KERNEL ((void *)0x1000)

CUresult cuFuncGetParamInfo(void *f, size_t index, size_t *offset, size_t *size) {
    if (f == NOOP_KERNEL) return 1;
    if (f != ADD_KERNEL) return 400;
    if (index > 1) return 1;
    *offset = index == 0 ? 0 : 8;
    *size = index == 0 ? 8 : 4;
    return 0;
}

/* A card of 80 GiB with 70 GiB free, whatever is allocated. */
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    if (free_bytes) *free_bytes = 70ull << 30;
    if (total_bytes) *total_bytes = 80ull << 30;
    return 0;
}

/* Contexts: cuCtxCreate_v2 hands out 0xC100, 0xC200, …; any non-NULL one destroys. */
static unsigned long long fake_ctxs = 0xC000;
CUresult cuCtxCreate_v2(void **ctx, unsigned flags, int dev) {
    (void)flags; (void)dev;
    if (!ctx) return 1;
    *ctx = (void *)(uintptr_t)(fake_ctxs += 0x100);
    return 0;
}
CUresult cuCtxDestroy_v2(void *ctx) { return ctx ? 0 : 1; }

static unsigned long long launched;

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void *stream, void **params, void **extra) {
    (void)bx; (void)by; (void)bz; (void)shared; (void)stream;
    if (f == NOOP_KERNEL) return 0;
    if (f != ADD_KERNEL) return 400;
    if (!gx || !gy || !gz || (!params == !extra)) return 1;
    CUdeviceptr p;
    int v;
    if (params) {
        p = *(CUdeviceptr *)params[0];
        v = *(int *)params[1];
    } else {
        /* extra: {BUFFER_POINTER (1), buf, BUFFER_SIZE (2), &size, END (0)}, the parameters
         * packed at the layout's offsets. */
        if (extra[0] != (void *)1 || extra[2] != (void *)2 || extra[4] != (void *)0) return 1;
        if (*(size_t *)extra[3] < 12) return 1;
        memcpy(&p, extra[1], 8);
        memcpy(&v, (char *)extra[1] + 8, 4);
    }
    pthread_mutex_lock(&fake_allocs_lock);
    int ok = fake_range_ok(p, 4);
    if (ok) *(int *)(uintptr_t)p += v;
    pthread_mutex_unlock(&fake_allocs_lock);
    if (!ok) return 1;
    const char *us = getenv("FAKE_CUDA_LAUNCH_US");
    if (us) usleep((useconds_t)atoi(us));
    launched++;
    fake_log("cuLaunchKernel add %llu (launch %llu)", (unsigned long long)v, launched);
    return 0;
}

CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned value, size_t n, void *stream) {
    (void)stream;
    return cuMemsetD32_v2(dst, value, n);
}
