/* module_ptx: PTX text JIT-compiled through cuModuleLoadData and cuModuleLoadDataEx. */
#include "common.h"
#include "kernels_ptx.h"
#include "launch_checks.h"

static const char broken_ptx[] =
    ".version 8.0\n.target sm_52\n.address_size 64\n"
    ".visible .entry broken() { this_is_not_ptx %r1; ret; }\n";

int main(void) {
    CUmodule mod, mod_ex, bad = NULL;
    char info_log[8192], error_log[8192];
    CUdevice dev;
    CUcontext ctx = setup_primary(&dev);

    CK(cuModuleLoadData(&mod, kernels_ptx));
    printf("loaded ptx bytes=%zu via cuModuleLoadData\n", sizeof kernels_ptx);
    check_module(mod, "ptx");
    CK(cuModuleUnload(mod));

    CUjit_option opts[5] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                            CU_JIT_OPTIMIZATION_LEVEL};
    void *vals[5];
    memset(info_log, 0, sizeof info_log);
    memset(error_log, 0, sizeof error_log);
    vals[0] = info_log;
    vals[1] = (void *)(uintptr_t)sizeof info_log;
    vals[2] = error_log;
    vals[3] = (void *)(uintptr_t)sizeof error_log;
    vals[4] = (void *)(uintptr_t)3;
    CK(cuModuleLoadDataEx(&mod_ex, kernels_ptx, 5, opts, vals));
    printf("loaded ptx via cuModuleLoadDataEx error_log_empty=%d\n", error_log[0] == '\0');
    check_module(mod_ex, "ptx_ex");
    CK(cuModuleUnload(mod_ex));

    memset(error_log, 0, sizeof error_log);
    vals[0] = info_log;
    vals[1] = (void *)(uintptr_t)sizeof info_log;
    vals[2] = error_log;
    vals[3] = (void *)(uintptr_t)sizeof error_log;
    CUresult res = cuModuleLoadDataEx(&bad, broken_ptx, 4, opts, vals);
    printf("broken ptx -> %s error_log_nonempty=%d\n", err_name(res), error_log[0] != '\0');
    EXPECT(res != CUDA_SUCCESS);
    EXPECT(error_log[0] != '\0');

    CK(cuDevicePrimaryCtxRelease(dev));
    (void)ctx;
    printf("PASS module_ptx\n");
    return 0;
}
