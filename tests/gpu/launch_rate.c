/*
 * launch_rate: launches per second, and the deferred launch error of vgpu's posted calls.
 *
 * stdout (diffed native vs vgpu) carries only deterministic lines: the counter after N launches
 * of bump_global, and that a bad launch's error is reported exactly once (natively by the launch
 * itself, through vgpu with posted calls by the next synchronising call; either is accepted).
 * stderr carries the figures: enqueue time of N launches, the final synchronise, launches/s.
 * Compare posted and synchronous forwarding with `VGPU_ASYNC=0 vgpuctl run -- launch_rate` and
 * `vgpuctl run -- launch_rate`; LAUNCH_RATE_N overrides N (default 100000).
 */
#include "kernels.h"
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    setup_primary(NULL);
    struct kernels k = load_kernels();
    CUfunction bump;
    CK(cuModuleGetFunction(&bump, k.module, "bump_global"));
    CUdeviceptr counter;
    size_t size = 0;
    CK(cuModuleGetGlobal(&counter, &size, k.module, "g_counter"));
    EXPECT(size == 4);
    const char *env_n = getenv("LAUNCH_RATE_N");
    int n = env_n ? atoi(env_n) : 100000;
    EXPECT(n > 0);

    for (int round = 0; round < 2; round++) {
        CK(cuMemsetD32(counter, 0, 1));
        CK(cuCtxSynchronize());
        uint32_t one = 1;
        void *args[] = {&one};
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            CK(cuLaunchKernel(bump, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
        double t1 = now_s();
        CK(cuCtxSynchronize());
        double t2 = now_s();
        uint32_t seen = 0;
        CK(cuMemcpyDtoH(&seen, counter, 4));
        EXPECT(seen == (uint32_t)n);
        printf("round %d counter after launches = n: %d\n", round, seen == (uint32_t)n);
        const char *async = getenv("VGPU_ASYNC");
        fprintf(stderr,
                "launch_rate round %d (VGPU_ASYNC=%s): %d launches enqueued in %.1f ms, "
                "sync %.1f ms, %.2f us per launch enqueued, %.0f launches/s end to end\n",
                round, async ? async : "unset", n, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
                (t1 - t0) * 1e6 / n, n / (t2 - t0));
    }

    /* A launch the driver refuses (1025 threads per block): reported once, by the launch
     * (native, synchronous forwarding) or by the next synchronising call (posted). */
    uint32_t one = 1;
    void *args[] = {&one};
    CUresult launch = cuLaunchKernel(bump, 1, 1, 1, 1025, 1, 1, 0, NULL, args, NULL);
    CUresult sync = cuCtxSynchronize();
    CUresult again = cuCtxSynchronize();
    EXPECT(launch != CUDA_SUCCESS || sync != CUDA_SUCCESS);
    EXPECT(launch == CUDA_SUCCESS || sync == CUDA_SUCCESS);
    CUresult reported = launch != CUDA_SUCCESS ? launch : sync;
    printf("bad launch reported once: %s, then %s\n", err_name(reported), err_name(again));
    CK(cuModuleUnload(k.module));
    printf("PASS launch_rate\n");
    return 0;
}
