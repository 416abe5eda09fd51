/* Driver functions the NVML facade uses that libcuda.c does not define: compiled together with
 * it for host/tests/nvml_facade.rs. Weak, so a later definition in libcuda.c wins. The device's
 * bus id is 0000:(0x17 + d):00.0; memory is 80 GiB with 60 GiB free. */
#include <stdio.h>
#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;

static int fake_primary_refs[16];
static CUcontext fake_stack[16];
static int fake_depth;

__attribute__((weak)) CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d) {
    if (!id || len < 13 || d < 0 || d >= 16) return 1;
    snprintf(id, (size_t)len, "0000:%02x:00.0", 0x17 + d);
    return 0;
}
__attribute__((weak)) CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d) {
    if (!ctx || d < 0 || d >= 16) return 1;
    fake_primary_refs[d]++;
    *ctx = (CUcontext)(size_t)(0x1000 + d);
    return 0;
}
__attribute__((weak)) CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (d < 0 || d >= 16 || fake_primary_refs[d] == 0) return 1;
    fake_primary_refs[d]--;
    return 0;
}
__attribute__((weak)) CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    if (!ctx || fake_depth == 16) return 1;
    fake_stack[fake_depth++] = ctx;
    return 0;
}
__attribute__((weak)) CUresult cuCtxPopCurrent_v2(CUcontext *ctx) {
    if (fake_depth == 0) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
    fake_depth--;
    if (ctx) *ctx = fake_stack[fake_depth];
    return 0;
}
__attribute__((weak)) CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    if (!free_bytes || !total) return 1;
    if (fake_depth == 0) return 201; /* the real driver needs a current context */
    *free_bytes = (size_t)60 << 30;
    *total = (size_t)80 << 30;
    return 0;
}
