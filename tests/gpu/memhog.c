/*
 * memhog MIB: allocates MIB MiB of device memory, touches it, prints `allocated MIB MiB pid=PID`, then
 * sleeps until killed (the SIGKILL-frees-memory test of scripts/gpu-suite.sh).
 */
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    CUdevice dev;
    CUdeviceptr p;
    if (argc < 2) {
        printf("usage: memhog MIB\n");
        return 2;
    }
    size_t mib = strtoull(argv[1], NULL, 10);
    EXPECT(mib > 0);
    setup_primary(&dev);
    CK(cuMemAlloc(&p, mib << 20));
    CK(cuMemsetD8(p, 0xA5, mib << 20));
    CK(cuCtxSynchronize());
    printf("allocated %zu MiB pid=%d\n", mib, (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
