/*
 * module_cubin: an sm_90 cubin (argv[1], tests/gpu/kernels.sm_90.cubin) loaded bare with
 * cuModuleLoadData, wrapped in a fatbin built here for cuModuleLoadFatBinary and
 * cuLibraryLoadData, then driven through cuLibraryGetKernel / cuKernelGetFunction /
 * cuLibraryGetModule. PTX through cuLibraryLoadData too.
 */
#include "common.h"
#include "kernels_ptx.h"
#include "launch_checks.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("FAIL cannot open %s\n", path);
        exit(1);
    }
    EXPECT(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    EXPECT(size > 0);
    EXPECT(fseek(f, 0, SEEK_SET) == 0);
    unsigned char *buf = malloc((size_t)size);
    EXPECT(buf != NULL);
    EXPECT(fread(buf, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* A one-entry fatbin holding the cubin, laid out as fatbinary 13.0 lays out an sm_90 ELF. */
static unsigned char *make_fatbin(const unsigned char *cubin, size_t len, size_t *out_len) {
    size_t padded = (len + 7) & ~(size_t)7;
    size_t total = 16 + 64 + padded;
    unsigned char *fb = calloc(1, total);
    EXPECT(fb != NULL);
    put32(fb + 0, 0xBA55ED50u);
    put16(fb + 4, 1);
    put16(fb + 6, 16);
    put64(fb + 8, (uint64_t)(64 + padded));
    unsigned char *e = fb + 16;
    put16(e + 0, 2);          /* kind: ELF */
    put16(e + 2, 0x0101);
    put32(e + 4, 64);         /* entry header size */
    put64(e + 8, padded);     /* payload size */
    put16(e + 24, 8);         /* code version 1.8 */
    put16(e + 26, 1);
    put32(e + 28, 90);        /* sm_90 */
    put64(e + 40, 0x11);      /* flags: 64-bit, linux */
    memcpy(e + 64, cubin, len);
    *out_len = total;
    return fb;
}

static void check_library(CUlibrary lib, const char *tag) {
    CUkernel kernel;
    CUfunction f;
    CUmodule mod;
    CUdeviceptr out;
    unsigned int count = 0;
    uint32_t n = 256, seed = 99, host[256];
    void *args[] = {&out, &n, &seed};
    CK(cuLibraryGetKernelCount(&count, lib));
    printf("%s kernel_count=%u\n", tag, count);
    CK(cuLibraryGetKernel(&kernel, lib, "fill_u32"));
    CK(cuKernelGetFunction(&f, kernel));
    CK(cuMemAlloc(&out, sizeof host));
    CK(cuLaunchKernel(f, 2, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(host, out, sizeof host));
    for (uint32_t i = 0; i < n; i++) EXPECT(host[i] == fill_value(i, seed));
    printf("%s kernel->function fill_u32 checksum %016llx\n", tag,
           (unsigned long long)fnv1a(host, sizeof host));
    /* A CUkernel may be passed where a CUfunction is expected. */
    seed = 100;
    CK(cuLaunchKernel((CUfunction)kernel, 2, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(host, out, sizeof host));
    for (uint32_t i = 0; i < n; i++) EXPECT(host[i] == fill_value(i, seed));
    printf("%s kernel-as-function fill_u32 checksum %016llx\n", tag,
           (unsigned long long)fnv1a(host, sizeof host));
    CK(cuMemFree(out));
    CK(cuLibraryGetModule(&mod, lib));
    check_module(mod, tag);
}

int main(int argc, char **argv) {
    size_t cubin_len = 0, fatbin_len = 0;
    CUmodule mod;
    CUlibrary lib;
    CUdevice dev;
    if (argc < 2) {
        printf("usage: module_cubin KERNELS.sm_90.cubin\n");
        return 2;
    }
    unsigned char *cubin = read_file(argv[1], &cubin_len);
    EXPECT(cubin_len > 64 && memcmp(cubin, "\177ELF", 4) == 0);
    printf("cubin bytes=%zu checksum %016llx\n", cubin_len,
           (unsigned long long)fnv1a(cubin, cubin_len));
    setup_primary(&dev);

    CK(cuModuleLoadData(&mod, cubin));
    check_module(mod, "cubin");
    CK(cuModuleUnload(mod));

    unsigned char *fatbin = make_fatbin(cubin, cubin_len, &fatbin_len);
    printf("fatbin bytes=%zu\n", fatbin_len);
    CK(cuModuleLoadFatBinary(&mod, fatbin));
    check_module(mod, "fatbin");
    CK(cuModuleUnload(mod));

    CK(cuLibraryLoadData(&lib, fatbin, NULL, NULL, 0, NULL, NULL, 0));
    check_library(lib, "library_fatbin");
    CK(cuLibraryUnload(lib));

    CK(cuLibraryLoadData(&lib, cubin, NULL, NULL, 0, NULL, NULL, 0));
    check_library(lib, "library_cubin");
    CK(cuLibraryUnload(lib));

    CK(cuLibraryLoadData(&lib, kernels_ptx, NULL, NULL, 0, NULL, NULL, 0));
    check_library(lib, "library_ptx");
    CK(cuLibraryUnload(lib));

    free(fatbin);
    free(cubin);
    CK(cuDevicePrimaryCtxRelease(dev));
    printf("PASS module_cubin\n");
    return 0;
}
