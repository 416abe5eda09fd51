/*
 * Where discovery time goes: prints, on stderr only (not diffed), the wall time of cuInit,
 * a first and a second cuCtxCreate (each destroyed), and the same with the primary context
 * retained. stdout carries only PASS/FAIL. Used by scripts/gpu-suite.sh's timing section.
 */
#include "common.h"
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void) {
    double t0 = now_ms();
    CK(cuInit(0));
    double t1 = now_ms();
    CUdevice dev;
    CK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    double t2 = now_ms();
    CK(cuCtxCreate(&ctx, NULL, 0, dev));
    double t3 = now_ms();
    CK(cuCtxDestroy(ctx));
    double t4 = now_ms();
    CK(cuCtxCreate(&ctx, NULL, 0, dev));
    double t5 = now_ms();
    CK(cuCtxDestroy(ctx));
    CUcontext primary;
    double t6 = now_ms();
    CK(cuDevicePrimaryCtxRetain(&primary, dev));
    double t7 = now_ms();
    CK(cuCtxCreate(&ctx, NULL, 0, dev));
    double t8 = now_ms();
    CK(cuCtxDestroy(ctx));
    CK(cuDevicePrimaryCtxRelease(dev));
    fprintf(stderr, "init_ms=%.3f ctx1_ms=%.3f destroy_ms=%.3f ctx2_ms=%.3f primary_ms=%.3f ctx_with_primary_ms=%.3f\n",
            t1 - t0, t3 - t2, t4 - t3, t5 - t4, t7 - t6, t8 - t7);
    printf("PASS ctx_timing\n");
    return 0;
}
