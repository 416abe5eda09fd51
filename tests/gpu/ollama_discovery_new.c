/*
 * ollama_discovery_new: the sequence of `ollama gpu-discover` (0.30 and later): dlopen
 * libcuda.so.1, cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName,
 * attributes 75, 76 and 18, cuDeviceTotalMem_v2, cuDeviceGetPCIBusId. Values to stdout, the wall
 * time of the whole sequence to stderr as `discovery_ms=<n>` (not diffed).
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct api {
    CUresult (*init)(unsigned int);
    CUresult (*driver_version)(int *);
    CUresult (*device_count)(int *);
    CUresult (*device_get)(CUdevice *, int);
    CUresult (*name)(char *, int, CUdevice);
    CUresult (*attribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*total_mem)(size_t *, CUdevice);
    CUresult (*pci_bus_id)(char *, int, CUdevice);
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
    SYM(name, "cuDeviceGetName");
    SYM(attribute, "cuDeviceGetAttribute");
    SYM(total_mem, "cuDeviceTotalMem_v2");
    SYM(pci_bus_id, "cuDeviceGetPCIBusId");

    CALL(api.init(0));
    CALL(api.driver_version(&version));
    CALL(api.device_count(&count));
    printf("driver_version %d\ndevice_count %d\n", version, count);
    for (int i = 0; i < count; i++) {
        CUdevice dev;
        char name[256], bus[64];
        int major = 0, minor = 0, a18 = 0;
        size_t total = 0;
        CALL(api.device_get(&dev, i));
        CALL(api.name(name, (int)sizeof name, dev));
        CALL(api.attribute(&major, (CUdevice_attribute)75, dev));
        CALL(api.attribute(&minor, (CUdevice_attribute)76, dev));
        CALL(api.attribute(&a18, (CUdevice_attribute)18, dev));
        CALL(api.total_mem(&total, dev));
        CALL(api.pci_bus_id(bus, (int)sizeof bus, dev));
        printf("device %d name %s compute %d.%d attr18 %d total_mem %zu pci %s\n", i, name, major,
               minor, a18, total, bus);
    }
    double t1 = now_ms();
    fprintf(stderr, "discovery_ms=%.3f\n", t1 - t0);
    printf("PASS ollama_discovery_new\n");
    return 0;
}
