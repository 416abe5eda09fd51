"""CuPy through vgpu: elementwise, an NVRTC RawKernel, a reduction."""
import sys

import cupy as cp


def main() -> int:
    x = cp.arange(1 << 20, dtype=cp.float32)
    y = cp.sqrt(x) * 2 + 1
    print("elementwise", float(y[12345]), float(y.sum(dtype=cp.float64)))
    add = cp.ElementwiseKernel("float32 a, float32 b", "float32 c", "c = a * b + 3", "mul_add")
    print("elementwise_kernel", float(add(x, x)[1000]))
    raw = cp.RawKernel(r'''
extern "C" __global__ void scale(const float* in, float* out, float k, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * k;
}''', "scale")
    out = cp.empty_like(x)
    n = x.size
    raw(((n + 255) // 256,), (256,), (x, out, cp.float32(0.5), cp.int32(n)))
    print("rawkernel", float(out[777]), float(out.sum(dtype=cp.float64)))
    m = cp.arange(1000 * 1000, dtype=cp.int64).reshape(1000, 1000)
    print("reduction", int(m.sum()), int(m.max(axis=1)[999]), float(cp.linalg.norm(x[:1000])))
    print("PASS cupy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
