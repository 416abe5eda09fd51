// nvcc program for runtime version skew: gpu-stacks.sh links it against CUDA 12's cudart
// (libcudart.so.12) while the driver is CUDA 13's. It uses only runtime calls that CUDA 12 and 13
// share, so it builds with either toolkit's headers; output is deterministic.
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

__global__ void axpy(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

int main() {
    int runtime = 0, driver = 0, count = 0, major = 0, minor = 0;
    CK(cudaRuntimeGetVersion(&runtime));
    CK(cudaDriverGetVersion(&driver));
    printf("runtime major=%d driver=%d\n", runtime / 1000, driver);
    CK(cudaGetDeviceCount(&count));
    CK(cudaSetDevice(0));
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    printf("devices>0=%d capability=%d.%d\n", count > 0, major, minor);

    const int n = 1 << 20;
    float *hx = nullptr, *hy = nullptr, *dx = nullptr, *dy = nullptr;
    CK(cudaMallocHost(&hx, n * sizeof(float)));
    CK(cudaMallocHost(&hy, n * sizeof(float)));
    for (int i = 0; i < n; i++) { hx[i] = (i % 100) * 0.25f; hy[i] = 1.0f; }
    CK(cudaMalloc(&dx, n * sizeof(float)));
    CK(cudaMalloc(&dy, n * sizeof(float)));
    cudaStream_t s;
    cudaEvent_t done;
    CK(cudaStreamCreate(&s));
    CK(cudaEventCreate(&done));
    CK(cudaMemcpyAsync(dx, hx, n * sizeof(float), cudaMemcpyHostToDevice, s));
    CK(cudaMemsetAsync(dy, 0, n * sizeof(float), s));
    CK(cudaMemcpyAsync(dy, hy, n * sizeof(float) / 2, cudaMemcpyHostToDevice, s));
    axpy<<<(n + 255) / 256, 256, 0, s>>>(dx, dy, 4.0f, n);
    CK(cudaGetLastError());
    CK(cudaMemcpyAsync(hy, dy, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CK(cudaEventRecord(done, s));
    CK(cudaEventSynchronize(done));
    double sum = 0;
    for (int i = 0; i < n; i++) sum += hy[i];
    printf("axpy y[1]=%.2f y[%d]=%.2f sum=%.2f\n", hy[1], n - 1, hy[n - 1], sum);

    cudaFuncAttributes fa;
    CK(cudaFuncGetAttributes(&fa, axpy));
    printf("func maxThreadsPerBlock>0=%d\n", fa.maxThreadsPerBlock > 0);
    cudaError_t bad = cudaMemcpy(nullptr, hx, 1, cudaMemcpyHostToDevice);
    printf("bad copy -> %s\n", cudaGetErrorName(bad));
    cudaGetLastError();

    CK(cudaEventDestroy(done));
    CK(cudaStreamDestroy(s));
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    CK(cudaFreeHost(hx));
    CK(cudaFreeHost(hy));
    CK(cudaDeviceSynchronize());
    printf("PASS cudart_skew\n");
    return 0;
}
