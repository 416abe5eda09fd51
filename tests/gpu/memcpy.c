/*
 * memcpy: HtoD/DtoH/DtoD from 1 B to 1 GiB, 2D and 3D copies (sync and async), memsets of every
 * width (1D, 2D, async), page-locked host buffers, cuMemGetInfo.
 */
#include "common.h"

static void linear_sizes(CUstream stream) {
    static const size_t sizes[] = {1, 3, 4096 + 1, 1u << 20, 64u << 20, 1u << 30};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        unsigned char *src = malloc(n), *dst = malloc(n);
        CUdeviceptr a, b;
        EXPECT(src && dst);
        fill_pattern(src, n, (unsigned)k + 1);
        memset(dst, 0, n);
        CK(cuMemAlloc(&a, n));
        CK(cuMemAlloc(&b, n));
        CK(cuMemcpyHtoD(a, src, n));
        CK(cuMemcpyDtoD(b, a, n));
        CK(cuMemcpyDtoH(dst, b, n));
        EXPECT(memcmp(src, dst, n) == 0);
        printf("copy sync bytes=%zu checksum %016llx\n", n, (unsigned long long)fnv1a(dst, n));
        if (n <= (64u << 20)) {
            /* The async forms on pageable memory, synchronised by the stream. */
            memset(dst, 0, n);
            fill_pattern(src, n, (unsigned)k + 101);
            CK(cuMemcpyHtoDAsync(a, src, n, stream));
            CK(cuMemcpyDtoDAsync(b, a, n, stream));
            CK(cuMemcpyDtoHAsync(dst, b, n, stream));
            CK(cuStreamSynchronize(stream));
            EXPECT(memcmp(src, dst, n) == 0);
            printf("copy async bytes=%zu checksum %016llx\n", n, (unsigned long long)fnv1a(dst, n));
        }
        CK(cuMemFree(a));
        CK(cuMemFree(b));
        free(src);
        free(dst);
    }
}

static void copies_2d_3d(CUstream stream) {
    enum { W = 1000, H = 37, D = 5, HPITCH = 1024 };
    size_t dpitch = 0;
    CUdeviceptr d2, d3;
    unsigned char *src = malloc((size_t)HPITCH * H * D), *dst = malloc((size_t)HPITCH * H * D);
    EXPECT(src && dst);
    fill_pattern(src, (size_t)HPITCH * H * D, 7);

    CK(cuMemAllocPitch(&d2, &dpitch, W, H, 4));
    EXPECT(dpitch >= W);
    for (int async = 0; async < 2; async++) {
        CUDA_MEMCPY2D up, down;
        memset(&up, 0, sizeof up);
        up.srcMemoryType = CU_MEMORYTYPE_HOST;
        up.srcHost = src;
        up.srcPitch = HPITCH;
        up.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        up.dstDevice = d2;
        up.dstPitch = dpitch;
        up.WidthInBytes = W;
        up.Height = H;
        down = up;
        down.srcMemoryType = CU_MEMORYTYPE_DEVICE;
        down.srcHost = NULL;
        down.srcDevice = d2;
        down.srcPitch = dpitch;
        down.dstMemoryType = CU_MEMORYTYPE_HOST;
        down.dstDevice = 0;
        down.dstHost = dst;
        down.dstPitch = HPITCH;
        memset(dst, 0, (size_t)HPITCH * H);
        if (async) {
            CK(cuMemcpy2DAsync(&up, stream));
            CK(cuMemcpy2DAsync(&down, stream));
            CK(cuStreamSynchronize(stream));
        } else {
            CK(cuMemcpy2D(&up));
            CK(cuMemcpy2D(&down));
        }
        for (int y = 0; y < H; y++) EXPECT(memcmp(src + y * HPITCH, dst + y * HPITCH, W) == 0);
        printf("copy 2d async=%d %dx%d checksum %016llx\n", async, W, H,
               (unsigned long long)fnv1a(dst, (size_t)HPITCH * H));
    }
    CK(cuMemFree(d2));

    size_t dp3 = 1536;
    CK(cuMemAlloc(&d3, dp3 * H * D));
    for (int async = 0; async < 2; async++) {
        CUDA_MEMCPY3D up, down;
        memset(&up, 0, sizeof up);
        up.srcMemoryType = CU_MEMORYTYPE_HOST;
        up.srcHost = src;
        up.srcPitch = HPITCH;
        up.srcHeight = H;
        up.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        up.dstDevice = d3;
        up.dstPitch = dp3;
        up.dstHeight = H;
        up.WidthInBytes = W;
        up.Height = H;
        up.Depth = D;
        down = up;
        down.srcMemoryType = CU_MEMORYTYPE_DEVICE;
        down.srcHost = NULL;
        down.srcDevice = d3;
        down.srcPitch = dp3;
        down.dstMemoryType = CU_MEMORYTYPE_HOST;
        down.dstDevice = 0;
        down.dstHost = dst;
        down.dstPitch = HPITCH;
        memset(dst, 0, (size_t)HPITCH * H * D);
        if (async) {
            CK(cuMemcpy3DAsync(&up, stream));
            CK(cuMemcpy3DAsync(&down, stream));
            CK(cuStreamSynchronize(stream));
        } else {
            CK(cuMemcpy3D(&up));
            CK(cuMemcpy3D(&down));
        }
        for (int z = 0; z < D; z++)
            for (int y = 0; y < H; y++) {
                size_t off = ((size_t)z * H + y) * HPITCH;
                EXPECT(memcmp(src + off, dst + off, W) == 0);
            }
        printf("copy 3d async=%d %dx%dx%d checksum %016llx\n", async, W, H, D,
               (unsigned long long)fnv1a(dst, (size_t)HPITCH * H * D));
    }
    CK(cuMemFree(d3));
    free(src);
    free(dst);
}

static void memsets(CUstream stream) {
    enum { N = 4099 };
    CUdeviceptr d;
    static unsigned char h8[N * 4];
    uint16_t *h16 = (uint16_t *)h8;
    uint32_t *h32 = (uint32_t *)h8;
    CK(cuMemAlloc(&d, sizeof h8));

    CK(cuMemsetD8(d, 0x5A, N));
    CK(cuMemcpyDtoH(h8, d, N));
    for (int i = 0; i < N; i++) EXPECT(h8[i] == 0x5A);
    CK(cuMemsetD16(d, 0xBEEF, N));
    CK(cuMemcpyDtoH(h8, d, N * 2));
    for (int i = 0; i < N; i++) EXPECT(h16[i] == 0xBEEF);
    CK(cuMemsetD32(d, 0xDEADBEEFu, N));
    CK(cuMemcpyDtoH(h8, d, N * 4));
    for (int i = 0; i < N; i++) EXPECT(h32[i] == 0xDEADBEEFu);
    printf("memset d8/d16/d32 n=%d ok\n", N);

    CK(cuMemsetD8Async(d, 0x11, N, stream));
    CK(cuMemsetD16Async(d + N + 1, 0x2222, N / 2, stream)); /* 2-byte aligned: offset 4100 */
    CK(cuStreamSynchronize(stream));
    CK(cuMemcpyDtoH(h8, d, N * 2 + 2));
    for (int i = 0; i < N; i++) EXPECT(h8[i] == 0x11);
    for (int i = 0; i < N / 2 * 2; i++) EXPECT(h8[N + 1 + i] == 0x22);
    CK(cuMemsetD32Async(d, 0x01020304u, N, stream));
    CK(cuStreamSynchronize(stream));
    CK(cuMemcpyDtoH(h8, d, N * 4));
    for (int i = 0; i < N; i++) EXPECT(h32[i] == 0x01020304u);
    printf("memset async d8/d16/d32 ok\n");
    CK(cuMemFree(d));

    /* 2D: a 100 x 20 region of each width inside a 512-byte pitch. */
    enum { PITCH = 512, ROWS = 20, COLS = 100 };
    static unsigned char h2[PITCH * ROWS];
    CK(cuMemAlloc(&d, PITCH * ROWS));
    CK(cuMemsetD8(d, 0, PITCH * ROWS));
    CK(cuMemsetD2D8(d, PITCH, 0x7E, COLS, ROWS));
    CK(cuMemcpyDtoH(h2, d, sizeof h2));
    for (int y = 0; y < ROWS; y++)
        for (int x = 0; x < PITCH; x++) EXPECT(h2[y * PITCH + x] == (x < COLS ? 0x7E : 0));
    CK(cuMemsetD2D16(d, PITCH, 0x1234, COLS, ROWS));
    CK(cuMemsetD2D32(d, PITCH, 0xCAFEF00Du, COLS / 4, ROWS));
    CK(cuMemcpyDtoH(h2, d, sizeof h2));
    for (int y = 0; y < ROWS; y++) {
        uint32_t w32;
        uint16_t w16;
        memcpy(&w32, h2 + y * PITCH + 4 * (COLS / 4 - 1), 4);
        memcpy(&w16, h2 + y * PITCH + 4 * (COLS / 4), 2);
        EXPECT(w32 == 0xCAFEF00Du && w16 == 0x1234 && h2[y * PITCH + 2 * COLS] == 0);
    }
    printf("memset 2d d8/d16/d32 checksum %016llx\n", (unsigned long long)fnv1a(h2, sizeof h2));
    CK(cuMemsetD2D8Async(d, PITCH, 0x01, COLS, ROWS, stream));
    CK(cuMemsetD2D16Async(d + 256, PITCH, 0x0202, COLS / 2, ROWS, stream));
    CK(cuMemsetD2D32Async(d + 400, PITCH, 0x03030303u, 20, ROWS, stream));
    CK(cuStreamSynchronize(stream));
    CK(cuMemcpyDtoH(h2, d, sizeof h2));
    EXPECT(h2[0] == 1 && h2[256] == 2 && h2[400] == 3 && h2[PITCH * (ROWS - 1) + 479] == 3);
    printf("memset 2d async checksum %016llx\n", (unsigned long long)fnv1a(h2, sizeof h2));
    CK(cuMemFree(d));
}

static void pinned(CUstream stream) {
    size_t n = 8u << 20;
    void *a = NULL, *b = NULL;
    CUdeviceptr d;
    CK(cuMemAllocHost(&a, n));
    CK(cuMemHostAlloc(&b, n, CU_MEMHOSTALLOC_PORTABLE));
    EXPECT(a && b);
    fill_pattern(a, n, 55);
    memset(b, 0, n);
    CK(cuMemAlloc(&d, n));
    CK(cuMemcpyHtoDAsync(d, a, n, stream));
    CK(cuMemcpyDtoHAsync(b, d, n, stream));
    CK(cuStreamSynchronize(stream));
    EXPECT(memcmp(a, b, n) == 0);
    printf("pinned alloc_host+host_alloc bytes=%zu checksum %016llx\n", n,
           (unsigned long long)fnv1a(b, n));
    CK(cuMemFree(d));
    CK(cuMemFreeHost(a));
    CK(cuMemFreeHost(b));
}

int main(void) {
    CUdevice dev;
    CUstream stream;
    size_t free_b = 0, total_b = 0;
    setup_primary(&dev);
    CK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CK(cuMemGetInfo(&free_b, &total_b));
    printf("meminfo free<=total %d total>0 %d\n", free_b <= total_b, total_b > 0);
    EXPECT(free_b <= total_b && total_b > 0);
    linear_sizes(stream);
    copies_2d_3d(stream);
    memsets(stream);
    pinned(stream);
    CK(cuStreamDestroy(stream));
    CK(cuDevicePrimaryCtxRelease(dev));
    printf("PASS memcpy\n");
    return 0;
}
