/*
 * Kernel checks shared by module_ptx and module_cubin: every function of kernels.ptx launched
 * with scalar, pointer and struct-by-value parameters, through cuLaunchKernel (both the
 * kernelParams and the `extra` buffer forms), cuLaunchKernelEx and cuLaunchCooperativeKernel.
 */
#ifndef VGPU_GPU_LAUNCH_CHECKS_H
#define VGPU_GPU_LAUNCH_CHECKS_H

#include "common.h"

/* C layout of the struct passed by value to params_struct (24 bytes, align 8). */
struct mixed {
    unsigned char c;
    int32_t i;
    double d;
    int16_t s;
};

_Static_assert(sizeof(struct mixed) == 24, "struct mixed must match the PTX .b8[24] parameter");

static void check_fill(CUmodule mod, const char *tag) {
    CUfunction f;
    CUdeviceptr out;
    uint32_t n = 1000, seed = 17, host[1000];
    void *args[] = {&out, &n, &seed};
    CK(cuModuleGetFunction(&f, mod, "fill_u32"));
    CK(cuMemAlloc(&out, sizeof host));
    CK(cuLaunchKernel(f, (n + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(host, out, sizeof host));
    for (uint32_t i = 0; i < n; i++) EXPECT(host[i] == fill_value(i, seed));
    printf("%s fill_u32 n=%u checksum %016llx\n", tag, n, (unsigned long long)fnv1a(host, sizeof host));
    CK(cuMemFree(out));
}

static void check_vec_add(CUmodule mod, const char *tag) {
    enum { N = 4099 };
    static float a[N], b[N], c[N];
    CUfunction f;
    CUdeviceptr da, db, dc;
    uint32_t n = N;
    void *args[] = {&da, &db, &dc, &n};
    for (int i = 0; i < N; i++) {
        a[i] = (float)i;
        b[i] = (float)(3 * i + 1);
    }
    CK(cuModuleGetFunction(&f, mod, "vec_add"));
    CK(cuMemAlloc(&da, sizeof a));
    CK(cuMemAlloc(&db, sizeof b));
    CK(cuMemAlloc(&dc, sizeof c));
    CK(cuMemcpyHtoD(da, a, sizeof a));
    CK(cuMemcpyHtoD(db, b, sizeof b));
    CK(cuLaunchKernel(f, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(c, dc, sizeof c));
    for (int i = 0; i < N; i++) EXPECT(c[i] == a[i] + b[i]);
    printf("%s vec_add n=%d c[%d]=%.1f checksum %016llx\n", tag, N, N - 1, (double)c[N - 1],
           (unsigned long long)fnv1a(c, sizeof c));
    CK(cuMemFree(da));
    CK(cuMemFree(db));
    CK(cuMemFree(dc));
}

struct scalar_out {
    int32_t a3;
    float b2;
    double c4;
    uint64_t dx;
};

static void verify_scalars(const struct scalar_out *o, const char *tag, const char *form) {
    EXPECT(o->a3 == -123 * 3);
    EXPECT(o->b2 == 2.5f * 2);
    EXPECT(o->c4 == 1.25 * 4);
    EXPECT(o->dx == (0x0123456789ABCDEFULL ^ 0x00FF00FF00FF00FFULL));
    printf("%s params_scalar %s a3=%d b2=%.3f c4=%.4f dx=%016llx\n", tag, form, o->a3,
           (double)o->b2, o->c4, (unsigned long long)o->dx);
}

static void check_scalars(CUmodule mod, const char *tag) {
    CUfunction f;
    CUdeviceptr out;
    int32_t a = -123;
    float b = 2.5f;
    double c = 1.25;
    uint64_t d = 0x0123456789ABCDEFULL;
    struct scalar_out host;
    void *args[] = {&out, &a, &b, &c, &d};
    CK(cuModuleGetFunction(&f, mod, "params_scalar"));
    CK(cuMemAlloc(&out, sizeof host));

    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(&host, out, sizeof host));
    verify_scalars(&host, tag, "params");

    /* The `extra` form: one packed buffer, laid out at the PTX parameter offsets. */
    unsigned char buf[32];
    size_t size = sizeof buf;
    memset(buf, 0, sizeof buf);
    memcpy(buf + 0, &out, 8);
    memcpy(buf + 8, &a, 4);
    memcpy(buf + 12, &b, 4);
    memcpy(buf + 16, &c, 8);
    memcpy(buf + 24, &d, 8);
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                     CU_LAUNCH_PARAM_END};
    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, extra));
    CK(cuMemcpyDtoH(&host, out, sizeof host));
    verify_scalars(&host, tag, "extra");

    /* cuLaunchKernelEx, with and without a launch attribute. */
    CUlaunchConfig cfg;
    CUlaunchAttribute attr;
    memset(&cfg, 0, sizeof cfg);
    memset(&attr, 0, sizeof attr);
    cfg.gridDimX = cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = cfg.blockDimY = cfg.blockDimZ = 1;
    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchKernelEx(&cfg, f, args, NULL));
    CK(cuMemcpyDtoH(&host, out, sizeof host));
    verify_scalars(&host, tag, "launch_ex");
    attr.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attr.value.cooperative = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchKernelEx(&cfg, f, args, NULL));
    CK(cuMemcpyDtoH(&host, out, sizeof host));
    verify_scalars(&host, tag, "launch_ex_coop_attr");

    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchCooperativeKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args));
    CK(cuMemcpyDtoH(&host, out, sizeof host));
    verify_scalars(&host, tag, "cooperative");
    CK(cuMemFree(out));
}

static void check_struct(CUmodule mod, const char *tag) {
    CUfunction f;
    CUdeviceptr out;
    struct mixed s;
    unsigned char host[24];
    uint32_t c;
    int32_t i, sv;
    double d;
    memset(&s, 0, sizeof s);
    s.c = 0xAB;
    s.i = -123456;
    s.d = 2.5e10;
    s.s = -1234;
    void *args[] = {&out, &s};
    CK(cuModuleGetFunction(&f, mod, "params_struct"));
    CK(cuMemAlloc(&out, sizeof host));
    CK(cuMemsetD8(out, 0, sizeof host));
    CK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(host, out, sizeof host));
    memcpy(&c, host, 4);
    memcpy(&i, host + 4, 4);
    memcpy(&d, host + 8, 8);
    memcpy(&sv, host + 16, 4);
    EXPECT(c == 0xAB && i == -123456 && d == 2.5e10 && sv == -1234);
    printf("%s params_struct c=%u i=%d d=%.1f s=%d\n", tag, c, i, d, sv);
    CK(cuMemFree(out));
}

static void check_global(CUmodule mod, const char *tag) {
    CUfunction f;
    CUdeviceptr g;
    size_t bytes = 0;
    uint32_t value = 0, add = 5;
    void *args[] = {&add};
    CK(cuModuleGetGlobal(&g, &bytes, mod, "g_counter"));
    EXPECT(bytes == 4);
    CK(cuMemcpyDtoH(&value, g, 4));
    printf("%s g_counter bytes=%zu initial=%u\n", tag, bytes, value);
    EXPECT(value == 7);
    CK(cuModuleGetFunction(&f, mod, "bump_global"));
    CK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    CK(cuCtxSynchronize());
    CK(cuMemcpyDtoH(&value, g, 4));
    EXPECT(value == 7 + 32 * 5);
    printf("%s g_counter after bump=%u\n", tag, value);
    value = 1;
    CK(cuMemcpyHtoD(g, &value, 4));
    CK(cuLaunchKernel(f, 2, 1, 1, 32, 1, 1, 0, NULL, args, NULL));
    CK(cuMemcpyDtoH(&value, g, 4));
    EXPECT(value == 1 + 64 * 5);
    printf("%s g_counter after reset+bump=%u\n", tag, value);
}

/* Runs every check on a loaded module. */
static void check_module(CUmodule mod, const char *tag) {
    CUfunction missing;
    CUresult res = cuModuleGetFunction(&missing, mod, "no_such_kernel");
    printf("%s missing function -> %s\n", tag, err_name(res));
    EXPECT(res != CUDA_SUCCESS);
    check_fill(mod, tag);
    check_vec_add(mod, tag);
    check_scalars(mod, tag);
    check_struct(mod, tag);
    check_global(mod, tag);
}

#endif
