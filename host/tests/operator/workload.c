/*
 * Guest program of host/tests/operator_view.rs: a scripted workload whose every effect on the
 * host's per-client counters is known. Runs with the shim preloaded against vgpu-host serving
 * the fake driver plus fake_kernels.c (posted/), with --client-memory-mib 16. Prints
 * "ready" once done, then holds everything until its stdin closes (or it is killed). With the
 * argument "busy" it then keeps launching and copying (100 launches, a synchronisation and a
 * 100000-byte copy each way every 10 ms) instead of idling: a screen for the README.
 *
 *   contexts      1: cuCtxCreate_v2
 *   memory        5 MiB: 1 + 2 + 4 MiB allocated, the 2 MiB freed; a 64 MiB one refused
 *   modules       1, streams 2, events 1
 *   posted        100 launches of add, and one of a kernel the fake driver refuses (a
 *                 deferred error, reported by the cuCtxSynchronize after it)
 *   copies        htod 1000 inline + 100000 bulk + 65536 zero-copy (pinned source);
 *                 dtoh 2000 inline + 150000 bulk + 32768 zero-copy (pinned destination)
 */
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long dptr;
#define FN(ret, name, args) typedef ret (*name##_t) args; static name##_t name;
FN(int, cuInit, (unsigned))
FN(int, cuCtxCreate_v2, (void **, unsigned, int))
FN(int, cuMemAlloc_v2, (dptr *, size_t))
FN(int, cuMemFree_v2, (dptr))
FN(int, cuMemAllocHost_v2, (void **, size_t))
FN(int, cuMemcpyHtoD_v2, (dptr, const void *, size_t))
FN(int, cuMemcpyDtoH_v2, (void *, dptr, size_t))
FN(int, cuStreamCreate, (void **, unsigned))
FN(int, cuEventCreate, (void **, unsigned))
FN(int, cuCtxSynchronize, (void))
FN(int, cuLaunchKernel, (void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, void *, void **, void **))
FN(int, cuModuleLoadData, (void **, const void *))
FN(int, cuModuleGetFunction, (void **, void *, const char *))
#define LOAD(name) name = (name##_t)dlsym(cuda, #name); if (!name) { printf("missing %s\n", #name); return 2; }
#define CHECK(what, call, want) do { int rc_ = (call); if (rc_ != (want)) { printf("%s rc=%d\n", what, rc_); return 1; } } while (0)

static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n";

int main(int argc, char **argv) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    LOAD(cuInit) LOAD(cuCtxCreate_v2) LOAD(cuMemAlloc_v2) LOAD(cuMemFree_v2)
    LOAD(cuMemAllocHost_v2) LOAD(cuMemcpyHtoD_v2) LOAD(cuMemcpyDtoH_v2) LOAD(cuStreamCreate)
    LOAD(cuEventCreate) LOAD(cuCtxSynchronize) LOAD(cuLaunchKernel) LOAD(cuModuleLoadData)
    LOAD(cuModuleGetFunction)
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK("init", cuInit(0), 0);
    void *ctx = NULL;
    CHECK("context", cuCtxCreate_v2(&ctx, 0, 0), 0);
    dptr a = 0, b = 0, c = 0, big = 0;
    CHECK("alloc 1 MiB", cuMemAlloc_v2(&a, 1 << 20), 0);
    CHECK("alloc 2 MiB", cuMemAlloc_v2(&b, 2 << 20), 0);
    CHECK("alloc 4 MiB", cuMemAlloc_v2(&c, 4 << 20), 0);
    CHECK("free 2 MiB", cuMemFree_v2(b), 0);
    CHECK("alloc past the quota", cuMemAlloc_v2(&big, 64 << 20), 2 /* OUT_OF_MEMORY */);
    void *module = NULL, *add = NULL, *bad = NULL;
    CHECK("module", cuModuleLoadData(&module, PTX), 0);
    CHECK("add", cuModuleGetFunction(&add, module, "ADD0"), 0);
    CHECK("bad", cuModuleGetFunction(&bad, module, "BAD0"), 0);
    void *s1 = NULL, *s2 = NULL, *e = NULL;
    CHECK("stream", cuStreamCreate(&s1, 0), 0);
    CHECK("stream", cuStreamCreate(&s2, 0), 0);
    CHECK("event", cuEventCreate(&e, 0), 0);
    int one = 1;
    void *params[] = {&a, &one};
    for (int i = 0; i < 100; i++) CHECK("launch", cuLaunchKernel(add, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL), 0);
    CHECK("bad launch (posted)", cuLaunchKernel(bad, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), 0);
    CHECK("sync reports the deferred error", cuCtxSynchronize(), 400);
    static unsigned char buf[150000];
    memset(buf, 7, sizeof buf);
    CHECK("htod inline", cuMemcpyHtoD_v2(c, buf, 1000), 0);
    CHECK("htod bulk", cuMemcpyHtoD_v2(c, buf, 100000), 0);
    CHECK("dtoh inline", cuMemcpyDtoH_v2(buf, c, 2000), 0);
    CHECK("dtoh bulk", cuMemcpyDtoH_v2(buf, c, 150000), 0);
    void *pinned = NULL;
    CHECK("pinned", cuMemAllocHost_v2(&pinned, 65536), 0);
    memset(pinned, 9, 65536);
    CHECK("htod zero-copy", cuMemcpyHtoD_v2(c, pinned, 65536), 0);
    CHECK("dtoh zero-copy", cuMemcpyDtoH_v2(pinned, c, 32768), 0);
    CHECK("sync", cuCtxSynchronize(), 0);
    printf("ready\n");
    int busy = argc > 1 && !strcmp(argv[1], "busy");
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (;;) {
        if (poll(&in, 1, busy ? 10 : -1) > 0) {
            char line[64];
            if (!fgets(line, sizeof line, stdin)) return 0;
        }
        if (!busy) continue;
        for (int i = 0; i < 100; i++) cuLaunchKernel(add, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
        cuCtxSynchronize();
        cuMemcpyHtoD_v2(c, buf, 100000);
        cuMemcpyDtoH_v2(buf, c, 100000);
    }
}
