// nvcc program: cuBLAS SGEMM; output is deterministic.
#include <cstdio>
#include <vector>
#include <cublas_v2.h>
int main() {
    const int n = 256;
    std::vector<float> a(n * n), b(n * n), c(n * n);
    for (int i = 0; i < n * n; i++) { a[i] = (i % 17) * 0.25f; b[i] = (i % 13) * 0.5f; }
    float *da, *db, *dc;
    cudaMalloc(&da, n * n * 4); cudaMalloc(&db, n * n * 4); cudaMalloc(&dc, n * n * 4);
    cudaMemcpy(da, a.data(), n * n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), n * n * 4, cudaMemcpyHostToDevice);
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    const float one = 1, zero = 0;
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, da, n, db, n, &zero, dc, n);
    cudaError_t e = cudaMemcpy(c.data(), dc, n * n * 4, cudaMemcpyDeviceToHost);
    double sum = 0; for (float v : c) sum += v;
    printf("sgemm status=%d err=%s c[0]=%.2f c[777]=%.2f sum=%.6e\n", (int)s, cudaGetErrorName(e), c[0], c[777], sum);
    if (s == CUBLAS_STATUS_SUCCESS) cublasDestroy(h);
    return (s == CUBLAS_STATUS_SUCCESS && e == cudaSuccess) ? 0 : 1;
}
