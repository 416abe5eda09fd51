/* Guest-side caches end to end (host/tests/guest_cache.rs): queries repeated many times must
 * reach the driver once per change, and every answer must be the driver's. Prints one line per
 * step; the test compares them and counts the driver's calls. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUkernel;
typedef void *CUfunction;

#define N 100
static void *lib;
static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) { fprintf(stderr, "missing %s\n", name); exit(2); }
    return p;
}
#define CHECK(call) do { CUresult r_ = (call); if (r_) { printf("%s -> %d\n", #call, r_); exit(1); } } while (0)

static CUresult (*cuInit)(unsigned);
static CUresult (*cuDeviceGet)(CUdevice *, int);
static CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
static CUresult (*getState)(CUdevice, unsigned *, int *);
static CUresult (*retain)(CUcontext *, CUdevice);
static CUresult (*release)(CUdevice);
static CUresult (*setFlags)(CUdevice, unsigned);
static CUresult (*setCurrent)(CUcontext);
static CUresult (*getCurrent)(CUcontext *);
static CUresult (*ctxGetDevice)(CUdevice *);
static CUresult (*ctxGetDevice2)(CUdevice *, CUcontext);
static CUresult (*kernelGetAttr)(int *, int, CUkernel, CUdevice);
static CUresult (*kernelSetAttr)(int, int, CUkernel, CUdevice);
static CUresult (*funcGetAttr)(int *, int, CUfunction);
static CUresult (*kernelGetFunction)(CUfunction *, CUkernel);
static CUresult (*getLimit)(size_t *, int);
static CUresult (*setLimit)(int, size_t);
static CUresult (*beginCapture)(void *, int);
static CUresult (*endCapture)(void *, void **);
static CUresult (*isCapturing)(void *, int *);
static CUresult (*libraryUnload)(void *);
static CUresult (*libraryLoadData)(void **, const void *, void *, void **, unsigned, void *, void **,
                                   unsigned);
static CUresult (*libraryGetKernel)(CUkernel *, void *, const char *);
static CUresult (*streamCreate)(void **, unsigned);

/* The fake driver's kernel 0x5000, looked up by name (its hex handle) in a loaded library, as a
 * program gets its kernels: the host only admits handles the driver gave. */
static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n";
static void *library;
static CUkernel kernel;
static void load_kernel(void) {
    CHECK(libraryLoadData(&library, PTX, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(libraryGetKernel(&kernel, library, "5000"));
}
static CUdevice dev;

static void state(const char *when) {
    unsigned flags = 99; int active = 99;
    for (int i = 0; i < N; i++) CHECK(getState(dev, &flags, &active));
    printf("%s: flags %u active %d\n", when, flags, active);
}
static void kernel_attr(const char *when) {
    int v = -1;
    for (int i = 0; i < N; i++) CHECK(kernelGetAttr(&v, 8, kernel, dev));
    printf("%s: kernel attr 8 = %d\n", when, v);
}
static void capturing(const char *when, void *stream) {
    int st = -1;
    for (int i = 0; i < N; i++) CHECK(isCapturing(stream, &st));
    printf("%s: capturing %d\n", when, st);
}
static void *other_thread(void *arg) {
    (void)arg;
    CHECK(kernelSetAttr(8, 1024, kernel, dev));
    return NULL;
}

int main(void) {
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    cuInit = sym("cuInit"); cuDeviceGet = sym("cuDeviceGet");
    cuDeviceGetAttribute = sym("cuDeviceGetAttribute");
    getState = sym("cuDevicePrimaryCtxGetState"); retain = sym("cuDevicePrimaryCtxRetain");
    release = sym("cuDevicePrimaryCtxRelease_v2"); setFlags = sym("cuDevicePrimaryCtxSetFlags_v2");
    setCurrent = sym("cuCtxSetCurrent"); getCurrent = sym("cuCtxGetCurrent");
    ctxGetDevice = sym("cuCtxGetDevice"); ctxGetDevice2 = sym("cuCtxGetDevice_v2");
    kernelGetAttr = sym("cuKernelGetAttribute"); kernelSetAttr = sym("cuKernelSetAttribute");
    funcGetAttr = sym("cuFuncGetAttribute"); kernelGetFunction = sym("cuKernelGetFunction");
    getLimit = sym("cuCtxGetLimit"); setLimit = sym("cuCtxSetLimit");
    beginCapture = sym("cuStreamBeginCapture_v2"); endCapture = sym("cuStreamEndCapture");
    isCapturing = sym("cuStreamIsCapturing");
    libraryUnload = sym("cuLibraryUnload");
    libraryLoadData = sym("cuLibraryLoadData"); libraryGetKernel = sym("cuLibraryGetKernel");
    streamCreate = sym("cuStreamCreate");

    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    int cc = 0;
    for (int i = 0; i < N; i++) CHECK(cuDeviceGetAttribute(&cc, 75, dev));
    printf("device attr 75 = %d\n", cc);

    CUcontext cur = (CUcontext)1;
    for (int i = 0; i < N; i++) CHECK(getCurrent(&cur));
    printf("current before: %p\n", cur);
    CUdevice d = -1;
    CUresult r = ctxGetDevice(&d);
    printf("device without a context: %d\n", r);

    state("before retain");
    CUcontext ctx;
    CHECK(retain(&ctx, dev));
    state("after retain");
    CHECK(setFlags(dev, 4));
    state("after set flags");

    CHECK(setCurrent(ctx));
    for (int i = 0; i < N; i++) CHECK(getCurrent(&cur));
    printf("current after set: %p\n", cur);
    for (int i = 0; i < N; i++) CHECK(ctxGetDevice(&d));
    printf("context device: %d\n", d);
    d = -1;
    for (int i = 0; i < N; i++) CHECK(ctxGetDevice2(&d, NULL));
    printf("context device (v2, current): %d\n", d);
    d = -1;
    for (int i = 0; i < N; i++) CHECK(ctxGetDevice2(&d, ctx));
    printf("context device (v2, named): %d\n", d);

    size_t lim = 0;
    for (int i = 0; i < N; i++) CHECK(getLimit(&lim, 2)); /* CU_LIMIT_MALLOC_HEAP_SIZE */
    printf("heap limit: %zu\n", lim);
    CHECK(setLimit(2, 1 << 20));
    for (int i = 0; i < N; i++) CHECK(getLimit(&lim, 2));
    printf("heap limit after set: %zu\n", lim);
    for (int i = 0; i < N; i++) CHECK(getLimit(&lim, 0)); /* CU_LIMIT_STACK_SIZE: always asked */
    printf("stack limit: %zu\n", lim);

    load_kernel();

    kernel_attr("first");
    for (int i = 0; i < N; i++) CHECK(kernelSetAttr(8, 49152, kernel, dev));
    kernel_attr("after set");
    CUfunction f = NULL;
    for (int i = 0; i < N; i++) CHECK(kernelGetFunction(&f, kernel));
    printf("function: %p\n", f);
    int fv = -1;
    for (int i = 0; i < N; i++) CHECK(funcGetAttr(&fv, 8, f));
    printf("function attr 8 = %d\n", fv);
    r = kernelSetAttr(8, 1 << 30, kernel, dev);
    printf("too large a set: %d\n", r);
    int v = -1;
    printf("the next call: %d\n", kernelGetAttr(&v, 8, kernel, dev));
    kernel_attr("after a refused set");

    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    kernel_attr("after another thread's set");
    for (int i = 0; i < N; i++) CHECK(funcGetAttr(&fv, 8, f));
    printf("function attr 8 after the kernel's set = %d\n", fv);

    /* An unload: kept kernel answers go (handles may be reused: the same kernel comes back from
     * the library loaded again), the context stays kept. */
    CHECK(libraryUnload(library));
    for (int i = 0; i < N; i++) CHECK(getCurrent(&cur));
    printf("current after an unload: %p\n", cur);
    printf("the unloaded kernel: %d\n", kernelGetAttr(&v, 8, kernel, dev));
    load_kernel();
    kernel_attr("after an unload");

    void *s = NULL, *other = NULL, *graph = NULL;
    CHECK(streamCreate(&s, 0));
    CHECK(streamCreate(&other, 0));
    capturing("no capture begun", s);
    CHECK(beginCapture(s, 0));
    capturing("capture begun", s);
    capturing("capture begun, another stream", other);
    printf("a second begin: %d\n", beginCapture(s, 0));
    CHECK(endCapture(s, &graph));
    capturing("capture ended", s);
    printf("an end without a begin: %d\n", endCapture(s, &graph));
    capturing("after a failed end", s);

    CHECK(release(dev));
    state("after release");
    return 0;
}
