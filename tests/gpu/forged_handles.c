/*
 * forged_handles: run through vgpu only (natively the driver would dereference these values and
 * crash the process). A stream, event, function and array the process was never given get
 * CUDA_ERROR_INVALID_HANDLE from vgpu-host's handle gate (a context CUDA_ERROR_INVALID_CONTEXT),
 * and the same process's next calls still work. A posted call (the event record, the launch) reports its error at the next
 * synchronisation, as CUDA reports asynchronous errors; either way the line says which error.
 */
#include "kernels.h"

#include <inttypes.h>

/* The error of a call, or of the synchronisation after it when the call itself returned success
 * (a posted call's deferred error). */
static const char *outcome(CUresult r) {
    if (r == CUDA_SUCCESS) r = cuCtxSynchronize();
    const char *name = NULL;
    if (cuGetErrorName(r, &name) != CUDA_SUCCESS) name = "?";
    return name;
}

int main(void) {
    CUdevice dev;
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CUstream s;
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUevent e;
    CK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
    CUdeviceptr out;
    CK(cuMemAlloc(&out, 4 * 256));

    /* Values near real ones: what a guest guessing at the worker's heap would send. */
    CUstream forged_stream = (CUstream)((uintptr_t)s + 0x40);
    CUevent forged_event = (CUevent)((uintptr_t)e + 0x40);
    CUfunction forged_function = (CUfunction)((uintptr_t)k.fill_u32 + 0x40);
    uint32_t n = 256, seed = 5;
    void *args[] = {&out, &n, &seed};

    printf("forged stream: %s\n", outcome(cuStreamSynchronize(forged_stream)));
    printf("forged event: %s\n", outcome(cuEventRecord(forged_event, s)));
    printf("forged function: %s\n",
           outcome(cuLaunchKernel(forged_function, 1, 1, 1, 256, 1, 1, 0, s, args, NULL)));
    printf("event as a stream: %s\n", outcome(cuStreamSynchronize((CUstream)e)));
    CK(cuStreamDestroy(s));
    printf("destroyed stream: %s\n", outcome(cuStreamSynchronize(s)));

    /* A context and an array: pointers into the worker too. The context is made current only
     * if the gate let it through; the process's own context is made current again after. */
    CUcontext own;
    CK(cuCtxGetCurrent(&own));
    CUresult r = cuCtxSetCurrent((CUcontext)((uintptr_t)own + 0x40));
    printf("forged context: %s\n", outcome(r));
    CK(cuCtxSetCurrent(own));
    printf("forged array: %s\n", outcome(cuArrayDestroy((CUarray)((uintptr_t)out + 0x40))));

    /* The process goes on with its own handles. */
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CK(cuLaunchKernel(k.fill_u32, 1, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CK(cuEventRecord(e, s));
    CK(cuEventSynchronize(e));
    uint32_t host[256];
    CK(cuMemcpyDtoH(host, out, sizeof host));
    uint64_t sum = 0;
    for (int i = 0; i < 256; i++) sum += host[i];
    printf("own handles after: fill sum %" PRIu64 "\n", sum);
    return 0;
}
