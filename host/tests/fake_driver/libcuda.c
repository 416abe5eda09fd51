/* A fake CUDA driver for tests on machines without a GPU. Built at test time with `cc -shared`.
 * FAKE_CUDA_DEVICES (default 1) sets the device count; 0 makes cuInit fail with
 * CUDA_ERROR_NO_DEVICE (100), like the real driver on a machine without a GPU. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct { char bytes[16]; } CUuuid;

static int device_count(void) {
    const char *s = getenv("FAKE_CUDA_DEVICES");
    return s ? atoi(s) : 1;
}

/* FAKE_CUDA_INIT_MS makes cuInit take that long, like the real driver (100-300 ms). */
CUresult cuInit(unsigned int flags) {
    (void)flags;
    const char *ms = getenv("FAKE_CUDA_INIT_MS");
    if (ms) usleep((useconds_t)atoi(ms) * 1000);
    return device_count() > 0 ? 0 : 100;
}
CUresult cuDriverGetVersion(int *v) { if (!v) return 1; *v = 12080; return 0; }
CUresult cuDeviceGetCount(int *n) { if (!n) return 1; *n = device_count(); return 0; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (!d || ordinal < 0 || ordinal >= device_count()) return 101;
    *d = ordinal;
    return 0;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    if (!name || len <= 0 || d < 0 || d >= device_count()) return 1;
    strncpy(name, "Fake GPU", (size_t)len - 1);
    name[len - 1] = 0;
    return 0;
}
CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d) {
    if (!uuid || d < 0 || d >= device_count()) return 1;
    for (int i = 0; i < 16; i++) uuid->bytes[i] = (char)(0x10 * (d + 1) + i);
    return 0;
}
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
    if (!bytes || d < 0 || d >= device_count()) return 1;
    *bytes = (size_t)80 << 30;
    return 0;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice d) {
    if (!value || d < 0 || d >= device_count()) return 1;
    switch (attribute) {
    case 75: *value = 9; return 0;  /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *value = 0; return 0;  /* COMPUTE_CAPABILITY_MINOR */
    default: *value = 0; return 0;
    }
}
