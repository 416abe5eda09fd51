/*
 * managed: cuMemAllocManaged (docs/handlers.md, "Managed memory"). The CPU writes the memory
 * and a kernel reads it through the same pointer; a kernel and a memset write it and the CPU
 * reads it after a synchronisation; copies to, from and within it; pointer attributes and the
 * address range; prefetch (to the device and back) and advice on it, and the driver's answers
 * for both on device memory; cuMemHostGetFlags (and the flags) and cuMemHostGetDevicePointer on
 * it; a host-attached allocation attached to a stream; free. Every printed line is compared with
 * a native run.
 */
#include "kernels.h"

#define N 4096u

static CUmemLocation on_device(CUdevice dev) {
    CUmemLocation l = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev};
    return l;
}

static CUmemLocation on_host(void) {
    CUmemLocation l = {.type = CU_MEM_LOCATION_TYPE_HOST, .id = 0};
    return l;
}

int main(void) {
    CUdevice dev;
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CUstream s;
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    int managed_ok = 0;
    CK(cuDeviceGetAttribute(&managed_ok, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, dev));
    printf("device managed memory=%d\n", managed_ok);

    CUdeviceptr m;
    CK(cuMemAllocManaged(&m, N * 4, CU_MEM_ATTACH_GLOBAL));
    uint32_t *h = (uint32_t *)(uintptr_t)m;

    /* The CPU writes, a kernel reads the same pointer: m[1] = m[0] + 1000. */
    for (unsigned i = 0; i < N; i++) h[i] = i * 3u + 7u;
    launch_copy_plus(&k, s, m, m + 4);
    CK(cuStreamSynchronize(s));
    printf("kernel read cpu write=%u\n", h[1]);

    /* A kernel writes the whole buffer, the CPU reads it after the stream. */
    unsigned n = N, seed = 99;
    void *args[] = {&m, &n, &seed};
    CK(cuLaunchKernel(k.fill_u32, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CK(cuStreamSynchronize(s));
    printf("kernel fill checksum=%016llx\n", (unsigned long long)fnv1a(h, N * 4));

    /* A memset, then the CPU reads after a context synchronisation. */
    CK(cuMemsetD32(m, 0x5a5a5a5au, N / 2));
    CK(cuCtxSynchronize());
    printf("memset first=%08x last set=%08x after=%08x\n", h[0], h[N / 2 - 1], h[N / 2]);

    /* Copies: host to managed, managed to device, device to host, and managed to host. */
    uint32_t src[64], back[64];
    for (unsigned i = 0; i < 64; i++) src[i] = 0xC0DE0000u + i;
    CK(cuMemcpyHtoD(m + 256, src, sizeof src));
    printf("htod seen by cpu=%d\n", memcmp(h + 64, src, sizeof src) == 0);
    CUdeviceptr d;
    CK(cuMemAlloc(&d, N * 4));
    CK(cuMemcpyDtoD(d, m, N * 4));
    uint32_t *copy = malloc(N * 4);
    EXPECT(copy != NULL);
    CK(cuMemcpyDtoH(copy, d, N * 4));
    printf("dtod same=%d\n", memcmp(copy, h, N * 4) == 0);
    CK(cuMemcpyDtoH(back, m + 256, sizeof back));
    printf("dtoh from managed same=%d\n", memcmp(back, src, sizeof src) == 0);

    /* Pointer attributes and the range. */
    unsigned is_managed = 9, type = 0, mapped = 9;
    CUdeviceptr devp = 0, start = 0;
    void *hostp = NULL;
    size_t size = 0;
    CK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, m + 64));
    CK(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, m + 64));
    CK(cuPointerGetAttribute(&devp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, m + 64));
    CK(cuPointerGetAttribute(&hostp, CU_POINTER_ATTRIBUTE_HOST_POINTER, m + 64));
    CK(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, m + 64));
    CK(cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, m + 64));
    CK(cuPointerGetAttribute(&mapped, CU_POINTER_ATTRIBUTE_MAPPED, m + 64));
    printf("attributes managed=%u type=%u device=%d host=%d start=%d size>=asked=%d mapped=%u\n",
           is_managed, type, devp == m + 64, hostp == (void *)(uintptr_t)(m + 64), start == m,
           size >= N * 4, mapped);
    CUpointer_attribute attrs[] = {CU_POINTER_ATTRIBUTE_IS_MANAGED,
                                   CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL};
    unsigned managed2 = 9;
    int ordinal = -1;
    void *data[] = {&managed2, &ordinal};
    CK(cuPointerGetAttributes(2, attrs, data, m));
    printf("attributes array managed=%u ordinal=%d\n", managed2, ordinal);
    CUdeviceptr base = 0;
    size_t len = 0;
    CK(cuMemGetAddressRange(&base, &len, m + 100));
    printf("address range base=%d size>=asked=%d\n", base == m, len >= N * 4);

    /* Prefetch to the device and back, advice; the same on device memory. */
    printf("prefetch device=%s\n", err_name(cuMemPrefetchAsync(m, N * 4, on_device(dev), 0, s)));
    printf("prefetch host=%s\n", err_name(cuMemPrefetchAsync(m, N * 4, on_host(), 0, s)));
    CK(cuStreamSynchronize(s));
    printf("after prefetch value=%08x\n", h[0]);
    printf("advise read mostly=%s\n",
           err_name(cuMemAdvise(m, N * 4, CU_MEM_ADVISE_SET_READ_MOSTLY, on_device(dev))));
    printf("advise preferred=%s\n",
           err_name(cuMemAdvise(m, N * 4, CU_MEM_ADVISE_SET_PREFERRED_LOCATION, on_device(dev))));
    printf("advise accessed by=%s\n",
           err_name(cuMemAdvise(m, N * 4, CU_MEM_ADVISE_SET_ACCESSED_BY, on_device(dev))));
    printf("prefetch device memory=%s\n",
           err_name(cuMemPrefetchAsync(d, N * 4, on_device(dev), 0, s)));
    printf("advise device memory=%s\n",
           err_name(cuMemAdvise(d, N * 4, CU_MEM_ADVISE_SET_READ_MOSTLY, on_device(dev))));
    /* Natively cuMemHostGetFlags succeeds here (H100, 2026-12-06); the flags value it writes is
     * printed so that the native-vs-vgpu diff checks vgpu's guess (DEVICEMAP, 2). The device
     * pointer of managed memory: vgpu answers the pointer itself. */
    unsigned flags = 0;
    CUresult hf = cuMemHostGetFlags(&flags, (void *)h);
    printf("host flags of managed=%s flags=%u\n", err_name(hf), hf == CUDA_SUCCESS ? flags : 0u);
    CUdeviceptr alias = 0;
    CUresult hd = cuMemHostGetDevicePointer(&alias, (void *)h, 0);
    printf("host device pointer of managed=%s same=%d\n", err_name(hd),
           hd == CUDA_SUCCESS && alias == m);

    /* A host-attached allocation, attached to a stream, written by a kernel. */
    CUdeviceptr a;
    CK(cuMemAllocManaged(&a, 256 * 4, CU_MEM_ATTACH_HOST));
    CK(cuStreamAttachMemAsync(s, a, 0, CU_MEM_ATTACH_SINGLE));
    unsigned n2 = 256, seed2 = 5;
    void *args2[] = {&a, &n2, &seed2};
    CK(cuLaunchKernel(k.fill_u32, 1, 1, 1, 256, 1, 1, 0, s, args2, NULL));
    CK(cuStreamSynchronize(s));
    printf("attached fill checksum=%016llx\n",
           (unsigned long long)fnv1a((void *)(uintptr_t)a, 256 * 4));

    CK(cuMemFree(a));
    CK(cuMemFree(m));
    CK(cuMemFree(d));
    free(copy);
    CK(cuStreamDestroy(s));
    CK(cuModuleUnload(k.module));
    printf("PASS managed\n");
    return 0;
}
