/*
 * two_threads: two pthreads, each with its own context (cuCtxCreate) on device 0, each loading
 * the module and launching kernels; the context stack per thread (Set/Get/Push/Pop).
 * Threads record results; the main thread prints them in a fixed order after joining.
 */
#include <pthread.h>

#include "kernels.h"

#define ITERATIONS 25
#define N 65536

struct worker {
    int id;
    CUdevice dev;
    CUcontext ctx;
    uint64_t checksums[ITERATIONS];
    int stack_ok;
    int device_ok;
};

static void *run(void *arg) {
    struct worker *w = arg;
    CUcontext cur = NULL, popped = NULL;
    CUdevice d = -1;
    const size_t bytes = N * sizeof(uint32_t);
    uint32_t *host = malloc(bytes);
    EXPECT(host != NULL);
    w->ctx = create_ctx(w->dev);
    CK(cuCtxGetCurrent(&cur));
    w->stack_ok = cur == w->ctx;
    CK(cuCtxGetDevice(&d));
    w->device_ok = d == w->dev;

    struct kernels k = load_kernels();
    CUdeviceptr out;
    CK(cuMemAlloc(&out, bytes));
    for (int it = 0; it < ITERATIONS; it++) {
        uint32_t n = N, seed = (uint32_t)(w->id * 1000 + it);
        void *args[] = {&out, &n, &seed};
        CK(cuLaunchKernel(k.fill_u32, N / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CK(cuMemcpyDtoH(host, out, bytes));
        for (uint32_t i = 0; i < n; i++) EXPECT(host[i] == fill_value(i, seed));
        w->checksums[it] = fnv1a(host, bytes);
    }

    /* The context stack of this thread. */
    CK(cuCtxPopCurrent(&popped));
    w->stack_ok &= popped == w->ctx;
    CK(cuCtxGetCurrent(&cur));
    w->stack_ok &= cur == NULL;
    CK(cuCtxPushCurrent(w->ctx));
    CK(cuCtxGetCurrent(&cur));
    w->stack_ok &= cur == w->ctx;
    CK(cuCtxSetCurrent(NULL));
    CK(cuCtxGetCurrent(&cur));
    w->stack_ok &= cur == NULL;
    CK(cuCtxSetCurrent(w->ctx));
    CK(cuCtxGetCurrent(&cur));
    w->stack_ok &= cur == w->ctx;

    CK(cuMemFree(out));
    CK(cuModuleUnload(k.module));
    free(host);
    return NULL;
}

int main(void) {
    CUdevice dev;
    CUcontext main_cur = NULL;
    struct worker w[2];
    pthread_t t[2];
    CK(cuInit(0));
    CK(cuDeviceGet(&dev, 0));
    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i + 1;
        w[i].dev = dev;
        EXPECT(pthread_create(&t[i], NULL, run, &w[i]) == 0);
    }
    for (int i = 0; i < 2; i++) EXPECT(pthread_join(t[i], NULL) == 0);
    CK(cuCtxGetCurrent(&main_cur));
    printf("main thread current context is NULL %d\n", main_cur == NULL);
    printf("contexts distinct %d\n", w[0].ctx != w[1].ctx);
    EXPECT(w[0].ctx != w[1].ctx);
    for (int i = 0; i < 2; i++) {
        printf("thread %d stack_ok=%d device_ok=%d\n", w[i].id, w[i].stack_ok, w[i].device_ok);
        EXPECT(w[i].stack_ok && w[i].device_ok);
        for (int it = 0; it < ITERATIONS; it++)
            printf("thread %d iteration %d checksum %016llx\n", w[i].id, it,
                   (unsigned long long)w[i].checksums[it]);
    }
    for (int i = 0; i < 2; i++) CK(cuCtxDestroy(w[i].ctx));
    printf("PASS two_threads\n");
    return 0;
}
