/*
 * host_callback: cuLaunchHostFunc and cuStreamAddCallback run in this process, in stream order:
 * each callback sees the value the preceding kernel wrote (copied back before it), and work
 * enqueued after a callback waits for it (a copy of a host value the callback writes).
 */
#include <unistd.h>

#include "kernels.h"

#define SPIN_CYCLES 50000000ULL
#define MAX_RECORDS 8

struct record {
    int id;
    uint32_t saw;
    int status;
    int pid_matches;
};

static struct record records[MAX_RECORDS];
static int record_count;
static volatile uint32_t *pinned_in;   /* device -> host copy target, read by callbacks */
static volatile uint32_t *pinned_out;  /* written by a callback, copied host -> device after it */
static pid_t main_pid;

static void note(int id, int status) {
    int slot = __atomic_fetch_add(&record_count, 1, __ATOMIC_SEQ_CST);
    if (slot >= MAX_RECORDS) return;
    records[slot].id = id;
    records[slot].saw = *pinned_in;
    records[slot].status = status;
    records[slot].pid_matches = getpid() == main_pid;
}

static void CUDA_CB host_fn(void *user) { note((int)(intptr_t)user, 0); }

static void CUDA_CB stream_cb(CUstream stream, CUresult status, void *user) {
    (void)stream;
    note((int)(intptr_t)user, (int)status);
}

static void CUDA_CB slow_writer(void *user) {
    (void)user;
    usleep(50 * 1000);
    *pinned_out = 777;
    note(100, 0);
}

int main(void) {
    CUdevice dev;
    CUstream s;
    CUdeviceptr dv, dv2;
    void *in = NULL, *outp = NULL;
    main_pid = getpid();
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CK(cuMemAlloc(&dv, 4));
    CK(cuMemAlloc(&dv2, 4));
    CK(cuMemAllocHost(&in, 4));
    CK(cuMemAllocHost(&outp, 4));
    pinned_in = in;
    pinned_out = outp;
    *pinned_in = 0;
    *pinned_out = 0;
    CK(cuMemsetD32(dv, 0, 1));
    CK(cuMemsetD32(dv2, 0, 1));

    for (int step = 1; step <= 4; step++) {
        launch_spin_write(&k, s, dv, (uint32_t)step * 11, SPIN_CYCLES);
        CK(cuMemcpyDtoHAsync(in, dv, 4, s));
        if (step % 2)
            CK(cuLaunchHostFunc(s, host_fn, (void *)(intptr_t)step));
        else
            CK(cuStreamAddCallback(s, stream_cb, (void *)(intptr_t)step, 0));
    }
    /* A callback that blocks the stream, then a copy of what it wrote. */
    CK(cuLaunchHostFunc(s, slow_writer, NULL));
    CK(cuMemcpyHtoDAsync(dv2, outp, 4, s));
    launch_copy_plus(&k, s, dv2, dv);
    CK(cuMemcpyDtoHAsync(in, dv, 4, s));
    CK(cuLaunchHostFunc(s, host_fn, (void *)(intptr_t)6));
    CK(cuStreamSynchronize(s));

    printf("callbacks recorded %d\n", record_count);
    EXPECT(record_count == 6);
    for (int i = 0; i < record_count; i++) {
        printf("callback order=%d id=%d saw=%u status=%d same_process=%d\n", i, records[i].id,
               records[i].saw, records[i].status, records[i].pid_matches);
        EXPECT(records[i].pid_matches);
        EXPECT(records[i].status == 0);
    }
    for (int i = 0; i < 4; i++) EXPECT(records[i].id == i + 1 && records[i].saw == (uint32_t)(i + 1) * 11);
    EXPECT(records[4].id == 100);
    EXPECT(records[5].id == 6 && records[5].saw == 1777);

    CK(cuMemFreeHost(in));
    CK(cuMemFreeHost(outp));
    CK(cuMemFree(dv));
    CK(cuMemFree(dv2));
    CK(cuStreamDestroy(s));
    CK(cuModuleUnload(k.module));
    CK(cuDevicePrimaryCtxRelease(dev));
    printf("PASS host_callback\n");
    return 0;
}
