/*
 * Guest program of host/tests/posted_calls.rs: runs with the shim preloaded against vgpu-host
 * serving the fake driver plus fake_kernels.c. argv[1] picks the scenario; every line it prints
 * is checked by the test.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned long long dptr;
#define FN(ret, name, args) typedef ret (*name##_t) args; static name##_t name;
FN(int, cuInit, (unsigned))
FN(int, cuMemAlloc_v2, (dptr *, size_t))
FN(int, cuMemcpyDtoH_v2, (void *, dptr, size_t))
FN(int, cuMemsetD32_v2, (dptr, unsigned, size_t))
FN(int, cuMemsetD32Async, (dptr, unsigned, size_t, void *))
FN(int, cuCtxSynchronize, (void))
FN(int, cuLaunchKernel, (void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, void *, void **, void **))
FN(int, cuModuleLoadData, (void **, const void *))
FN(int, cuModuleGetFunction, (void **, void *, const char *))
#define LOAD(name) name = (name##_t)dlsym(cuda, #name); if (!name) { printf("missing %s\n", #name); return 2; }

/* The fake kernels (fake_kernels.c), looked up by name (their hex handle) in a loaded module as
 * a program gets its functions: the host admits only handles the driver gave. 0xBAD0 is one the
 * fake driver hands out but refuses to launch. */
static void *ADD_KERNEL, *NOOP_KERNEL, *BAD_KERNEL;
static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n";
static int load_kernels(void) {
    void *module = NULL;
    int r = cuModuleLoadData(&module, PTX);
    if (!r) r = cuModuleGetFunction(&ADD_KERNEL, module, "ADD0");
    if (!r) r = cuModuleGetFunction(&NOOP_KERNEL, module, "1000");
    if (!r) r = cuModuleGetFunction(&BAD_KERNEL, module, "BAD0");
    return r;
}

static int add(dptr d, int v) {
    void *params[] = {&d, &v};
    return cuLaunchKernel(ADD_KERNEL, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
}

static int read_value(dptr d) {
    int v = -1;
    int r = cuMemcpyDtoH_v2(&v, d, sizeof v);
    if (r) printf("dtoh rc=%d\n", r);
    return v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static dptr shared_d;
static pthread_barrier_t barrier;

static void *poster(void *arg) {
    int n = *(int *)arg, failed = 0;
    for (int i = 0; i < n; i++) failed |= add(shared_d, 1);
    printf("thread posted rc=%d\n", failed);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    return NULL;
}

static void *bad_then_exit(void *arg) {
    (void)arg;
    printf("thread bad launch rc=%d\n", cuLaunchKernel(BAD_KERNEL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    LOAD(cuInit) LOAD(cuMemAlloc_v2) LOAD(cuMemcpyDtoH_v2) LOAD(cuMemsetD32_v2)
    LOAD(cuMemsetD32Async) LOAD(cuCtxSynchronize) LOAD(cuLaunchKernel) LOAD(cuModuleLoadData)
    LOAD(cuModuleGetFunction)
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("init rc=%d\n", cuInit(0));
    if (load_kernels()) { printf("cannot load the fake kernels\n"); return 2; }
    dptr d = 0;
    printf("alloc rc=%d\n", cuMemAlloc_v2(&d, 64));
    if (!strcmp(mode, "order")) {
        int failed = cuMemsetD32Async(d, 5, 16, NULL);
        for (int i = 1; i <= 1000; i++) {
            if (i == 501) failed |= cuMemsetD32_v2(d, 1000000, 1);
            failed |= add(d, i);
        }
        printf("posted rc=%d\n", failed);
        printf("value=%d\n", read_value(d));
        printf("sync rc=%d\n", cuCtxSynchronize());
    } else if (!strcmp(mode, "error")) {
        int failed = cuMemsetD32_v2(d, 0, 1);
        for (int i = 0; i < 3; i++) failed |= add(d, 1);
        printf("bad launch rc=%d\n", cuLaunchKernel(BAD_KERNEL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
        failed |= add(d, 10);
        void *params[] = {&d, &d};
        printf("zero grid rc=%d\n", cuLaunchKernel(ADD_KERNEL, 0, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        printf("good rc=%d\n", failed);
        printf("first sync rc=%d\n", cuCtxSynchronize());
        printf("second sync rc=%d\n", cuCtxSynchronize());
        printf("value=%d\n", read_value(d));
    } else if (!strcmp(mode, "threads")) {
        int n = 200;
        shared_d = d;
        printf("memset rc=%d\n", cuMemsetD32_v2(d, 0, 1));
        printf("sync rc=%d\n", cuCtxSynchronize());
        pthread_barrier_init(&barrier, NULL, 2);
        pthread_t t;
        pthread_create(&t, NULL, poster, &n);
        pthread_barrier_wait(&barrier);
        /* The other thread's launches were posted before the barrier: this read follows them. */
        printf("value=%d\n", read_value(d));
        pthread_barrier_wait(&barrier);
        pthread_join(t, NULL);
        pthread_create(&t, NULL, bad_then_exit, NULL);
        pthread_join(t, NULL);
        printf("after thread exit sync rc=%d\n", cuCtxSynchronize());
    } else if (!strcmp(mode, "exit")) {
        int failed = 0;
        for (int i = 0; i < 50; i++) failed |= add(d, 1);
        printf("posted rc=%d, leaving\n", failed);
        return 0;
    } else if (!strcmp(mode, "kill")) {
        int failed = 0;
        for (int i = 0; i < 20; i++) failed |= add(d, 1);
        printf("posted rc=%d\n", failed);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 3;
        printf("sync after kill rc=%d\n", cuCtxSynchronize());
        printf("launch after kill rc=%d\n", add(d, 1));
    } else if (!strcmp(mode, "bench")) {
        int n = argc > 2 ? atoi(argv[2]) : 100000;
        int failed = cuCtxSynchronize();
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            failed |= cuLaunchKernel(NOOP_KERNEL, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL);
        double t1 = now_s();
        failed |= cuCtxSynchronize();
        double t2 = now_s();
        const char *async = getenv("VGPU_ASYNC");
        printf("bench VGPU_ASYNC=%s: %d launches in %.1f ms (+%.1f ms sync) = %.0f launches/s, "
               "%.2f us each, rc=%d\n",
               async ? async : "(unset)", n, (t1 - t0) * 1e3, (t2 - t1) * 1e3, n / (t2 - t0),
               (t2 - t0) * 1e6 / n, failed);
    } else {
        return 2;
    }
    return 0;
}
