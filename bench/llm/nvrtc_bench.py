#!/usr/bin/env python3
"""Times nvrtcCompileProgram of one small kernel (median of N), through ctypes.

    nvrtc_bench.py [--lib PATH] [--reps N]

Prints one JSON line. The library defaults to the libnvrtc.so.13 that cuDNN and CuPy use (the
nvidia-cuda-nvrtc wheel's), else the CUDA toolkit's.
"""
import argparse
import ctypes
import glob
import hashlib
import json
import os
import statistics
import sys
import time

SRC = b"""
extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
"""


def find_lib():
    for pattern in [os.path.join(p, "nvidia/cu13/lib/libnvrtc.so.13") for p in sys.path] + [
            "/usr/local/cuda/lib64/libnvrtc.so.13"]:
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    return "libnvrtc.so.13"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lib", default=None)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--arch", default="sm_90")
    args = p.parse_args()
    path = args.lib or find_lib()
    lib = ctypes.CDLL(path)
    times, size = [], ctypes.c_size_t()
    for _ in range(args.reps):
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), SRC, b"axpy.cu", 0, None, None) == 0
        opts = (ctypes.c_char_p * 1)(b"--gpu-architecture=" + args.arch.encode())
        t = time.perf_counter()
        rc = lib.nvrtcCompileProgram(prog, 1, opts)
        times.append((time.perf_counter() - t) * 1e3)
        if rc != 0:
            print(json.dumps({"bench": "nvrtc", "error": rc}))
            return 1
        sass = args.arch.startswith("sm_")
        (lib.nvrtcGetCUBINSize if sass else lib.nvrtcGetPTXSize)(prog, ctypes.byref(size))
        out = ctypes.create_string_buffer(size.value)
        (lib.nvrtcGetCUBIN if sass else lib.nvrtcGetPTX)(prog, out)
        digest = hashlib.sha256(out.raw).hexdigest()[:16]
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    print(json.dumps({"bench": "nvrtc_compile", "lib": path, "ms_median": round(statistics.median(times), 2),
                      "ms_all": [round(t, 1) for t in times], "check": f"{size.value} bytes sha256 {digest}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
