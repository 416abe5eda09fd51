/*
 * ollama_discovery: the discovery sequence of Ollama releases up to 0.12.3, through dlopen and
 * the ten names they dlsym (cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet,
 * cuDeviceGetAttribute, cuDeviceGetUuid, cuDeviceGetName, cuCtxCreate_v3, cuMemGetInfo_v2,
 * cuCtxDestroy). Values go to stdout; the wall time of the whole sequence, dlopen included,
 * goes to stderr as `discovery_ms=<n>` (not diffed).
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* cuCtxCreate_v3 is declared by the 13.0 cuda.h only under __CUDA_API_VERSION_INTERNAL as
 * (CUcontext *, CUexecAffinityParam *, int numParams, unsigned int flags, CUdevice); Ollama
 * calls it with (&ctx, NULL, 0, 0, dev). */
typedef CUresult (*ctx_create_v3_fn)(CUcontext *, CUexecAffinityParam *, int, unsigned int, CUdevice);

struct api {
    CUresult (*init)(unsigned int);
    CUresult (*driver_version)(int *);
    CUresult (*device_count)(int *);
    CUresult (*device_get)(CUdevice *, int);
    CUresult (*attribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*uuid)(CUuuid *, CUdevice);
    CUresult (*name)(char *, int, CUdevice);
    ctx_create_v3_fn ctx_create_v3;
    CUresult (*mem_info)(size_t *, size_t *);
    CUresult (*ctx_destroy)(CUcontext);
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define SYM(field, name)                                             \
    do {                                                             \
        *(void **)(&api.field) = dlsym(lib, name);                   \
        if (!api.field) {                                            \
            printf("FAIL dlsym %s\n", name);                         \
            return 1;                                                \
        }                                                            \
    } while (0)

#define CALL(expr)                                                   \
    do {                                                             \
        CUresult r_ = (expr);                                        \
        if (r_ != CUDA_SUCCESS) {                                    \
            printf("FAIL %s -> %d\n", #expr, (int)r_);               \
            return 1;                                                \
        }                                                            \
    } while (0)

int main(void) {
    struct api api;
    int version = 0, count = 0;
    double t0 = now_ms();
    void *lib = dlopen("libcuda.so.1", RTLD_LAZY);
    if (!lib) {
        printf("FAIL dlopen libcuda.so.1: %s\n", dlerror());
        return 1;
    }
    SYM(init, "cuInit");
    SYM(driver_version, "cuDriverGetVersion");
    SYM(device_count, "cuDeviceGetCount");
    SYM(device_get, "cuDeviceGet");
    SYM(attribute, "cuDeviceGetAttribute");
    SYM(uuid, "cuDeviceGetUuid");
    SYM(name, "cuDeviceGetName");
    SYM(ctx_create_v3, "cuCtxCreate_v3");
    SYM(mem_info, "cuMemGetInfo_v2");
    SYM(ctx_destroy, "cuCtxDestroy");

    CALL(api.init(0));
    CALL(api.driver_version(&version));
    CALL(api.device_count(&count));
    printf("driver_version %d\ndevice_count %d\n", version, count);
    for (int i = 0; i < count; i++) {
        CUdevice dev;
        int major = 0, minor = 0;
        CUuuid uuid;
        char name[256];
        CUcontext ctx = NULL;
        size_t free_b = 0, total_b = 0;
        CALL(api.device_get(&dev, i));
        CALL(api.attribute(&major, (CUdevice_attribute)75, dev));
        CALL(api.attribute(&minor, (CUdevice_attribute)76, dev));
        CALL(api.uuid(&uuid, dev));
        CALL(api.name(name, (int)sizeof name, dev));
        CALL(api.ctx_create_v3(&ctx, NULL, 0, 0, dev));
        CALL(api.mem_info(&free_b, &total_b));
        CALL(api.ctx_destroy(ctx));
        printf("device %d compute %d.%d name %s uuid GPU-", i, major, minor, name);
        for (int b = 0; b < 16; b++) {
            printf("%02x", (unsigned char)uuid.bytes[b]);
            if (b == 3 || b == 5 || b == 7 || b == 9) printf("-");
        }
        printf(" total_mem %zu free<=total %d\n", total_b, free_b <= total_b);
    }
    double t1 = now_ms();
    fprintf(stderr, "discovery_ms=%.3f\n", t1 - t0);
    printf("PASS ollama_discovery\n");
    return 0;
}
