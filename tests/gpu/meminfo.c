/* meminfo: prints cuMemGetInfo as `free_mib=<n> total_mib=<n>` (compared by the suite, not diffed). */
#include "common.h"

int main(void) {
    CUdevice dev;
    size_t free_b = 0, total_b = 0;
    setup_primary(&dev);
    CK(cuMemGetInfo(&free_b, &total_b));
    printf("free_mib=%zu total_mib=%zu\n", free_b >> 20, total_b >> 20);
    CK(cuDevicePrimaryCtxRelease(dev));
    return 0;
}
