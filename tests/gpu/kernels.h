/* Loads the suite's PTX (kernels.ptx, embedded) into the current context. */
#ifndef VGPU_GPU_KERNELS_H
#define VGPU_GPU_KERNELS_H

#include "common.h"
#include "kernels_ptx.h"

struct kernels {
    CUmodule module;
    CUfunction fill_u32;
    CUfunction spin_then_write;
    CUfunction copy_plus;
};

static inline struct kernels load_kernels(void) {
    struct kernels k;
    CK(cuModuleLoadData(&k.module, kernels_ptx));
    CK(cuModuleGetFunction(&k.fill_u32, k.module, "fill_u32"));
    CK(cuModuleGetFunction(&k.spin_then_write, k.module, "spin_then_write"));
    CK(cuModuleGetFunction(&k.copy_plus, k.module, "copy_plus"));
    return k;
}

/* Enqueues spin_then_write(p, v, cycles) on `stream` (one thread). */
static inline void launch_spin_write(const struct kernels *k, CUstream stream, CUdeviceptr p,
                                     uint32_t v, uint64_t cycles) {
    void *args[] = {&p, &v, &cycles};
    CK(cuLaunchKernel(k->spin_then_write, 1, 1, 1, 1, 1, 1, 0, stream, args, NULL));
}

/* Enqueues copy_plus(src, dst): *dst = *src + 1000. */
static inline void launch_copy_plus(const struct kernels *k, CUstream stream, CUdeviceptr src,
                                    CUdeviceptr dst) {
    void *args[] = {&src, &dst};
    CK(cuLaunchKernel(k->copy_plus, 1, 1, 1, 1, 1, 1, 0, stream, args, NULL));
}

#endif
