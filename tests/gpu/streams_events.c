/*
 * streams_events: two streams ordered by an event (cuStreamWaitEvent), event and stream queries,
 * cuEventSynchronize / cuEventElapsedTime, timing-disabled events, cuCtxSynchronize.
 */
#include "kernels.h"

/* About 0.1 s of spinning on an H200 (~1.98 GHz). */
#define SPIN_CYCLES 200000000ULL

int main(void) {
    CUdevice dev;
    CUstream s1, s2;
    CUevent ev, start, stop, notime;
    CUdeviceptr flag, out;
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CK(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
    CK(cuStreamCreate(&s2, CU_STREAM_NON_BLOCKING));
    CK(cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    CK(cuEventCreate(&start, CU_EVENT_DEFAULT));
    CK(cuEventCreate(&stop, CU_EVENT_DEFAULT));
    CK(cuEventCreate(&notime, CU_EVENT_DISABLE_TIMING));
    CK(cuMemAlloc(&flag, 4));
    CK(cuMemAlloc(&out, 4));

    for (uint32_t round = 1; round <= 5; round++) {
        uint32_t value = 40 + round, seen = 0;
        CK(cuMemsetD32(flag, 0, 1));
        CK(cuMemsetD32(out, 0, 1));
        CK(cuCtxSynchronize());
        launch_spin_write(&k, s1, flag, value, SPIN_CYCLES / 4);
        CK(cuEventRecord(ev, s1));
        CK(cuStreamWaitEvent(s2, ev, 0));
        launch_copy_plus(&k, s2, flag, out);
        CK(cuMemcpyDtoHAsync(&seen, out, 4, s2));
        CK(cuStreamSynchronize(s2));
        EXPECT(seen == value + 1000);
        printf("round %u wait_event ordering out=%u\n", round, seen);
    }

    /* Queries while work is pending, then after it completed. */
    launch_spin_write(&k, s1, flag, 7, SPIN_CYCLES);
    CK(cuEventRecord(ev, s1));
    CUresult sq = cuStreamQuery(s1);
    CUresult eq = cuEventQuery(ev);
    EXPECT(sq == CUDA_SUCCESS || sq == CUDA_ERROR_NOT_READY);
    EXPECT(eq == CUDA_SUCCESS || eq == CUDA_ERROR_NOT_READY);
    printf("query while busy valid=1\n");
    CK(cuEventSynchronize(ev));
    CK(cuEventQuery(ev));
    CK(cuStreamQuery(s1));
    printf("query after sync: stream %s event %s\n", err_name(cuStreamQuery(s1)),
           err_name(cuEventQuery(ev)));

    /* Timing. */
    float ms = -1.0f;
    CK(cuEventRecord(start, s2));
    launch_spin_write(&k, s2, flag, 8, SPIN_CYCLES / 10);
    CK(cuEventRecord(stop, s2));
    CK(cuEventSynchronize(stop));
    CK(cuEventElapsedTime(&ms, start, stop));
    printf("elapsed>=0 %d\n", ms >= 0.0f);
    EXPECT(ms >= 0.0f);
    CK(cuEventRecord(notime, s2));
    CK(cuEventSynchronize(notime));
    CUresult tr = cuEventElapsedTime(&ms, start, notime);
    printf("elapsed with timing-disabled event -> %s\n", err_name(tr));
    EXPECT(tr != CUDA_SUCCESS);

    /* The legacy default stream, and cuCtxSynchronize draining both streams. */
    uint32_t a = 0, b = 0;
    launch_spin_write(&k, s1, flag, 1234, SPIN_CYCLES / 10);
    launch_spin_write(&k, s2, out, 5678, SPIN_CYCLES / 10);
    CK(cuCtxSynchronize());
    CK(cuMemcpyDtoH(&a, flag, 4));
    CK(cuMemcpyDtoH(&b, out, 4));
    EXPECT(a == 1234 && b == 5678);
    printf("ctx synchronize drained both streams a=%u b=%u\n", a, b);

    CK(cuMemFree(flag));
    CK(cuMemFree(out));
    CK(cuEventDestroy(ev));
    CK(cuEventDestroy(start));
    CK(cuEventDestroy(stop));
    CK(cuEventDestroy(notime));
    CK(cuStreamDestroy(s1));
    CK(cuStreamDestroy(s2));
    CK(cuModuleUnload(k.module));
    CK(cuDevicePrimaryCtxRelease(dev));
    printf("PASS streams_events\n");
    return 0;
}
