// nvcc program: unified (managed) memory through the runtime; output is deterministic.
// cudaMallocManaged written by the host, a kernel, read back by the host; a __managed__ global;
// pointer attributes; advice and prefetch to the device and back (CUDA 13's cudaMemLocation
// forms); memset and memcpy on managed memory; host-attached memory attached to a stream.
// Every call is checked: a failure prints "FAIL line call -> error" and exits 1.
#include <cstdio>
#include <cuda_runtime.h>

#define CK(call)                                                                            \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) {                                                            \
            printf("FAIL %d %s -> %s (%d)\n", __LINE__, #call, cudaGetErrorName(e_), (int)e_); \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

__managed__ int g_counter = 7;

__global__ void scale_add(float* v, int n, float k, float b) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = v[i] * k + b;
}

__global__ void bump(int times) {
    if (blockIdx.x == 0 && threadIdx.x < times) atomicAdd(&g_counter, 1);
}

static double host_sum(const float* v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s;
}

int main() {
    const int n = 1 << 20;
    const size_t bytes = n * sizeof(float);
    int managed = 0, concurrent = 0;
    CK(cudaSetDevice(0));
    CK(cudaDeviceGetAttribute(&managed, cudaDevAttrManagedMemory, 0));
    CK(cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, 0));
    printf("managedMemory=%d concurrentManagedAccess=%d\n", managed, concurrent);

    float* v = nullptr;
    CK(cudaMallocManaged(&v, bytes));
    for (int i = 0; i < n; i++) v[i] = (i % 1000) * 0.5f;
    scale_add<<<(n + 255) / 256, 256>>>(v, n, 2.0f, 1.0f);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    printf("global: v[0]=%.1f v[12345]=%.1f sum=%.1f\n", v[0], v[12345], host_sum(v, n));

    cudaPointerAttributes attr;
    CK(cudaPointerGetAttributes(&attr, v));
    printf("pointer type=%d (managed=%d) device=%d\n", (int)attr.type, (int)cudaMemoryTypeManaged,
           attr.device);

    bump<<<1, 32>>>(5);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    printf("__managed__ counter=%d\n", g_counter);
    g_counter = 100;
    bump<<<1, 32>>>(3);
    CK(cudaDeviceSynchronize());
    printf("__managed__ counter after host write=%d\n", g_counter);

    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (concurrent) {
        cudaMemLocation device = {cudaMemLocationTypeDevice, 0};
        cudaMemLocation host = {cudaMemLocationTypeHost, 0};
        CK(cudaMemAdvise(v, bytes, cudaMemAdviseSetPreferredLocation, device));
        CK(cudaMemPrefetchAsync(v, bytes, device, 0, s));
        scale_add<<<(n + 255) / 256, 256, 0, s>>>(v, n, 0.5f, -0.5f);
        CK(cudaGetLastError());
        CK(cudaMemPrefetchAsync(v, bytes, host, 0, s));
        CK(cudaStreamSynchronize(s));
        CK(cudaMemAdvise(v, bytes, cudaMemAdviseUnsetPreferredLocation, device));
        printf("prefetched: v[12345]=%.1f sum=%.1f\n", v[12345], host_sum(v, n));
    } else {
        printf("prefetch skipped: no concurrent managed access\n");
    }

    float* w = nullptr;
    CK(cudaMallocManaged(&w, bytes));
    CK(cudaMemset(w, 0, bytes));
    CK(cudaMemcpy(w, v, bytes / 2, cudaMemcpyDefault));
    CK(cudaDeviceSynchronize());
    printf("memset+memcpy: w[1]=%.1f w[%d]=%.1f sum=%.1f\n", w[1], n - 1, w[n - 1], host_sum(w, n));

    float* h = nullptr;
    CK(cudaMallocManaged(&h, bytes, cudaMemAttachHost));
    for (int i = 0; i < n; i++) h[i] = 1.0f;
    CK(cudaStreamAttachMemAsync(s, h, 0, cudaMemAttachSingle));
    CK(cudaStreamSynchronize(s));
    scale_add<<<(n + 255) / 256, 256, 0, s>>>(h, n, 3.0f, 0.0f);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(s));
    printf("attach-host: h[0]=%.1f sum=%.1f\n", h[0], host_sum(h, n));

    CK(cudaFree(h));
    CK(cudaFree(w));
    CK(cudaFree(v));
    CK(cudaStreamDestroy(s));
    printf("PASS managed %s\n", cudaGetErrorName(cudaGetLastError()));
    return 0;
}
