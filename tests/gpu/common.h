/*
 * Shared helpers of the vgpu driver-API GPU suite (docs/gpu-suite.md).
 * Programs print only deterministic lines (values, checksums, PASS/FAIL), so that the output
 * of a native run and a run through vgpu can be diffed.
 */
#ifndef VGPU_GPU_COMMON_H
#define VGPU_GPU_COMMON_H

#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Checks a driver call; on failure prints its name and the error name, and exits 1. */
#define CK(call)                                                                      \
    do {                                                                              \
        CUresult ck_res_ = (call);                                                    \
        if (ck_res_ != CUDA_SUCCESS) {                                                \
            const char *ck_name_ = NULL;                                              \
            if (cuGetErrorName(ck_res_, &ck_name_) != CUDA_SUCCESS) ck_name_ = "?";   \
            printf("FAIL %s:%d %s -> %s (%d)\n", __FILE__, __LINE__, #call, ck_name_, \
                   (int)ck_res_);                                                     \
            fflush(stdout);                                                           \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Checks a host-side condition; on failure prints it and exits 1. */
#define EXPECT(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) {                                                                \
            printf("FAIL %s:%d expected %s\n", __FILE__, __LINE__, #cond);            \
            fflush(stdout);                                                           \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Prints the name of a result code (for calls whose failure is expected). */
static inline const char *err_name(CUresult res) {
    const char *name = NULL;
    if (cuGetErrorName(res, &name) != CUDA_SUCCESS || name == NULL) return "?";
    return name;
}

/* FNV-1a, 64-bit: the checksum printed for buffers. */
static inline uint64_t fnv1a(const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Deterministic byte pattern: byte i of a buffer seeded with `seed`. */
static inline unsigned char pattern_byte(size_t i, unsigned seed) {
    uint32_t x = (uint32_t)i * 2654435761u + seed * 40503u;
    return (unsigned char)(x >> 13);
}

static inline void fill_pattern(void *buf, size_t len, unsigned seed) {
    unsigned char *p = (unsigned char *)buf;
    for (size_t i = 0; i < len; i++) p[i] = pattern_byte(i, seed);
}

/* The value fill_u32 writes at index i. */
static inline uint32_t fill_value(uint32_t i, uint32_t seed) { return i * 0x9E3779B1u + seed; }

/* cuInit, device 0, its primary context made current. */
static inline CUcontext setup_primary(CUdevice *dev_out) {
    CUdevice dev;
    CUcontext ctx;
    CK(cuInit(0));
    CK(cuDeviceGet(&dev, 0));
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
    if (dev_out) *dev_out = dev;
    return ctx;
}

/* A regular context (CUDA 13 cuCtxCreate takes CUctxCreateParams*; NULL means defaults). */
static inline CUcontext create_ctx(CUdevice dev) {
    CUcontext ctx = NULL;
    CUresult res = cuCtxCreate(&ctx, NULL, 0, dev);
    if (res == CUDA_ERROR_INVALID_VALUE) {
        CUctxCreateParams params;
        memset(&params, 0, sizeof params);
        res = cuCtxCreate(&ctx, &params, 0, dev);
    }
    CK(res);
    return ctx;
}

#endif
