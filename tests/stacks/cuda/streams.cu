// nvcc program: two streams ordered by an event; output is deterministic.
#include <cstdio>
__global__ void fill(int* p, int v, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) p[i] = v; }
__global__ void inc(const int* src, int* dst, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) dst[i] = src[i] + 1; }
int main() {
    const int n = 1 << 16;
    int *a, *b; cudaMalloc(&a, n * 4); cudaMalloc(&b, n * 4);
    cudaStream_t s1, s2; cudaStreamCreate(&s1); cudaStreamCreate(&s2);
    cudaEvent_t ev, t0, t1; cudaEventCreate(&ev); cudaEventCreate(&t0); cudaEventCreate(&t1);
    int ok = 1;
    for (int round = 1; round <= 5; round++) {
        cudaEventRecord(t0, s1);
        fill<<<n / 256, 256, 0, s1>>>(a, round * 10, n);
        cudaEventRecord(ev, s1);
        cudaStreamWaitEvent(s2, ev, 0);
        inc<<<n / 256, 256, 0, s2>>>(a, b, n);
        cudaEventRecord(t1, s2);
        int host = 0;
        cudaMemcpyAsync(&host, b + n - 1, 4, cudaMemcpyDeviceToHost, s2);
        cudaStreamSynchronize(s2);
        float ms = -1; cudaEventElapsedTime(&ms, t0, t1);
        printf("round %d b[last]=%d elapsed_nonneg=%d\n", round, host, ms >= 0);
        ok &= host == round * 10 + 1;
    }
    printf("%s streams %s\n", ok ? "PASS" : "FAIL", cudaGetErrorName(cudaGetLastError()));
    return ok ? 0 : 1;
}
