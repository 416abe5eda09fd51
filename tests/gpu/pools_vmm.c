/*
 * pools_vmm: memory pools (create, attributes, access, allocation), cuPointerGetAttributes on
 * device and pinned memory, VMM (granularity, create, reserve, map, access, retain, properties),
 * host registration with asynchronous copies, occupancy with and without a shared-memory
 * callback, the JIT linker (PTX in, cubin out, loaded and launched), graph-memory attributes.
 */
#include <unistd.h>

#include "kernels.h"

#define N 1024u

static size_t no_smem(int block) { (void)block; return 0; }

int main(void) {
    CUdevice dev;
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CUstream s;
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

    /* Pools. */
    CUmemPoolProps pp;
    memset(&pp, 0, sizeof pp);
    pp.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    pp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    pp.location.id = dev;
    CUmemoryPool pool;
    CK(cuMemPoolCreate(&pool, &pp));
    cuuint64_t threshold = 1 << 20, back = 0;
    CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
    CK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &back));
    int reuse = -1;
    CK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, &reuse));
    CUmemAccessDesc ad = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                          .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CK(cuMemPoolSetAccess(pool, &ad, 1));
    CUdeviceptr pa;
    CK(cuMemAllocFromPoolAsync(&pa, N * 4, pool, s));
    CK(cuStreamSynchronize(s));
    cuuint64_t used = 0;
    CK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
    printf("pool threshold=%llu reuse=%d used>=alloc=%d\n", (unsigned long long)back, reuse, used >= N * 4);

    /* Pointer attributes, array form. */
    CUpointer_attribute attrs[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                   CU_POINTER_ATTRIBUTE_IS_MANAGED};
    unsigned mtype = 0, managed = 9;
    int ordinal = -1;
    void *data[] = {&mtype, &ordinal, &managed};
    CK(cuPointerGetAttributes(3, attrs, data, pa));
    printf("pool pointer type=%u ordinal=%d managed=%u\n", mtype, ordinal, managed);
    void *pinned;
    CK(cuMemAllocHost(&pinned, 4096));
    mtype = 0;
    CK(cuPointerGetAttributes(1, attrs, data, (CUdeviceptr)(uintptr_t)pinned));
    printf("pinned pointer type=%u\n", mtype);
    CK(cuMemFreeAsync(pa, s));
    CK(cuStreamSynchronize(s));
    CK(cuMemPoolDestroy(pool));

    /* VMM. */
    int vmm = 0;
    CK(cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
    printf("vmm supported=%d\n", vmm);
    if (vmm) {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        size_t gran = 0;
        CK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
        CUmemGenericAllocationHandle h, h2;
        CK(cuMemCreate(&h, gran, &prop, 0));
        CUdeviceptr va;
        CK(cuMemAddressReserve(&va, gran, 0, 0, 0));
        CK(cuMemMap(va, gran, 0, h, 0));
        CK(cuMemSetAccess(va, gran, &ad, 1));
        CK(cuMemsetD32(va, 0x5a5a5a5a, N));
        uint32_t word = 0;
        CK(cuMemcpyDtoH(&word, va + 40, 4));
        CK(cuMemRetainAllocationHandle(&h2, (void *)(uintptr_t)va));
        CUmemAllocationProp got;
        CK(cuMemGetAllocationPropertiesFromHandle(&got, h2));
        printf("vmm granularity_pow2=%d word=%08x same_handle=%d location=%d\n",
               gran > 0 && (gran & (gran - 1)) == 0, word, h2 == h, got.location.id);
        CK(cuMemRelease(h2));
        CK(cuMemUnmap(va, gran));
        CK(cuMemAddressFree(va, gran));
        CK(cuMemRelease(h));
    }

    /* Host registration: an async copy from registered memory. */
    uint32_t *host = aligned_alloc(4096, N * 4);
    for (uint32_t i = 0; i < N; i++) host[i] = i * 3;
    CK(cuMemHostRegister(host, N * 4, 0));
    CUdeviceptr d;
    CK(cuMemAlloc(&d, N * 4));
    CK(cuMemcpyHtoDAsync(d, host, N * 4, s));
    CK(cuStreamSynchronize(s));
    CK(cuMemHostUnregister(host));
    uint32_t check[N];
    CK(cuMemcpyDtoH(check, d, sizeof check));
    printf("registered copy checksum=%016llx\n", (unsigned long long)fnv1a(check, sizeof check));
    free(host);

    /* Occupancy. */
    int grid1 = 0, block1 = 0, grid2 = 0, block2 = 0;
    CK(cuOccupancyMaxPotentialBlockSize(&grid1, &block1, k.fill_u32, NULL, 0, 0));
    CK(cuOccupancyMaxPotentialBlockSize(&grid2, &block2, k.fill_u32, no_smem, 0, 0));
    size_t avail = 0;
    CK(cuOccupancyAvailableDynamicSMemPerBlock(&avail, k.fill_u32, 1, 256));
    printf("occupancy block=%d same_with_callback=%d grid_same=%d avail_smem>0=%d\n", block1,
           block1 == block2, grid1 == grid2, avail > 0);

    /* Linker: PTX in, cubin out. */
    char info[1024] = {0}, error[1024] = {0};
    CUjit_option opts[] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                           CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[] = {info, (void *)(uintptr_t)sizeof info, error, (void *)(uintptr_t)sizeof error};
    CUlinkState link;
    CK(cuLinkCreate(4, opts, vals, &link));
    CK(cuLinkAddData(link, CU_JIT_INPUT_PTX, (void *)kernels_ptx, strlen(kernels_ptx) + 1, "kernels.ptx",
                     0, NULL, NULL));
    void *cubin;
    size_t cubin_size = 0;
    CK(cuLinkComplete(link, &cubin, &cubin_size));
    CUmodule linked;
    CK(cuModuleLoadData(&linked, cubin));
    CK(cuLinkDestroy(link));
    CUfunction fill;
    CK(cuModuleGetFunction(&fill, linked, "fill_u32"));
    uint32_t n = N, seed = 5;
    void *args[] = {&d, &n, &seed};
    CK(cuLaunchKernel(fill, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CK(cuStreamSynchronize(s));
    CK(cuMemcpyDtoH(check, d, sizeof check));
    printf("linked cubin nonempty=%d error_log_empty=%d fill checksum=%016llx\n", cubin_size > 0,
           error[0] == 0, (unsigned long long)fnv1a(check, sizeof check));
    CK(cuModuleUnload(linked));

    cuuint64_t graph_used = 1;
    CK(cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &graph_used));
    printf("graph mem used=%llu\n", (unsigned long long)graph_used);

    CK(cuMemFree(d));
    CK(cuMemFreeHost(pinned));
    printf("PASS pools_vmm\n");
    return 0;
}
