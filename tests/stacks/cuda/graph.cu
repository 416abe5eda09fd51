// nvcc program: a CUDA graph built by stream capture, instantiated and launched 3 times.
#include <cstdio>
__global__ void axpy(float* y, const float* x, float a, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] += a * x[i]; }
int main() {
    const int n = 4096;
    float *x, *y; cudaMalloc(&x, n * 4); cudaMalloc(&y, n * 4);
    cudaMemset(y, 0, n * 4);
    float hx[n]; for (int i = 0; i < n; i++) hx[i] = 1.0f + i % 3;
    cudaMemcpy(x, hx, n * 4, cudaMemcpyHostToDevice);
    cudaStream_t s; cudaStreamCreate(&s);
    cudaGraph_t g; cudaGraphExec_t ge;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    axpy<<<n / 256, 256, 0, s>>>(y, x, 2.0f, n);
    axpy<<<n / 256, 256, 0, s>>>(y, x, 0.5f, n);
    cudaError_t e = cudaStreamEndCapture(s, &g);
    size_t nodes = 0; cudaGraphGetNodes(g, nullptr, &nodes);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&ge, g, 0);
    for (int i = 0; i < 3 && e == cudaSuccess; i++) e = cudaGraphLaunch(ge, s);
    cudaStreamSynchronize(s);
    float hy[n]; cudaMemcpy(hy, y, n * 4, cudaMemcpyDeviceToHost);
    double sum = 0; for (int i = 0; i < n; i++) sum += hy[i];
    printf("graph nodes=%zu err=%s y[5]=%.2f sum=%.3f\n", nodes, cudaGetErrorName(e), hy[5], sum);
    return e == cudaSuccess ? 0 : 1;
}
