// nvcc program (runtime API): vector add; output is deterministic.
#include <cstdio>
#include <vector>
__global__ void add(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}
int main() {
    const int n = 1 << 20;
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) { a[i] = i * 0.5f; b[i] = 2.0f * i; }
    float *da, *db, *dc;
    cudaMalloc(&da, n * 4); cudaMalloc(&db, n * 4); cudaMalloc(&dc, n * 4);
    cudaMemcpy(da, a.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), n * 4, cudaMemcpyHostToDevice);
    add<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    cudaError_t e = cudaMemcpy(c.data(), dc, n * 4, cudaMemcpyDeviceToHost);
    double sum = 0; for (float v : c) sum += v;
    printf("vecadd err=%s c[12345]=%.1f sum=%.6e\n", cudaGetErrorName(e), c[12345], sum);
    cudaFree(da); cudaFree(db); cudaFree(dc);
    return e == cudaSuccess ? 0 : 1;
}
