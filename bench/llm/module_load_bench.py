#!/usr/bin/env python3
"""Times loading one small NVRTC-compiled cubin through the driver API, as cuDNN's runtime-compiled
engines do once per decoded token: cuLibraryLoadData, cuLibraryGetKernel, then cuLibraryUnload
(median of N), through ctypes on libcuda.so.1 (the shim under `vgpuctl run`).

    module_load_bench.py [--reps N]

Prints one JSON line with the median of each step in microseconds.
"""
import argparse
import ctypes
import json
import statistics
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from nvrtc_bench import SRC, find_lib  # noqa: E402


def cubin():
    nvrtc = ctypes.CDLL(find_lib())
    prog = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), SRC, b"axpy.cu", 0, None, None) == 0
    opts = (ctypes.c_char_p * 1)(b"--gpu-architecture=sm_90")
    assert nvrtc.nvrtcCompileProgram(prog, 1, opts) == 0
    size = ctypes.c_size_t()
    assert nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size)) == 0
    buf = ctypes.create_string_buffer(size.value)
    assert nvrtc.nvrtcGetCUBIN(prog, buf) == 0
    return buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    image = cubin()
    cu = ctypes.CDLL("libcuda.so.1")
    assert cu.cuInit(0) == 0
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    assert cu.cuCtxSetCurrent(ctx) == 0
    steps = {"load": [], "get_kernel": [], "unload": []}
    for _ in range(args.reps):
        lib, kernel = ctypes.c_void_p(), ctypes.c_void_p()
        t0 = time.perf_counter()
        assert cu.cuLibraryLoadData(ctypes.byref(lib), image, None, None, 0, None, None, 0) == 0
        t1 = time.perf_counter()
        assert cu.cuLibraryGetKernel(ctypes.byref(kernel), lib, b"axpy") == 0
        t2 = time.perf_counter()
        assert cu.cuLibraryUnload(lib) == 0
        t3 = time.perf_counter()
        for name, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
            steps[name].append(dt * 1e6)
    print(json.dumps({"bench": "module_load", "image_bytes": len(image.raw),
                      **{f"{k}_us": round(statistics.median(v), 1) for k, v in steps.items()}}))


if __name__ == "__main__":
    main()
