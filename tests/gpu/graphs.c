/*
 * graphs: stream capture (cuStreamGetCaptureInfo_v3), graphs built by hand (memset, kernel, host,
 * empty and event nodes; generic cuGraphAddNode), edges and queries, kernel node parameters read
 * back and updated in the executable graph, cuGraphInstantiate with a log buffer, stream
 * attributes, cuGraphDebugDotPrint.
 */
#include <unistd.h>

#include "kernels.h"

/* The ABI form with an error node and a log buffer (cuda.h maps the name to WithFlags). */
CUresult CUDAAPI cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node,
                                       char *log, size_t log_size);

#define N 4096u

static volatile int host_runs = 0;
static void host_node(void *data) { host_runs += *(int *)data; }

static uint64_t checksum(CUdeviceptr p) {
    static uint32_t buf[N];
    CK(cuMemcpyDtoH(buf, p, sizeof buf));
    return fnv1a(buf, sizeof buf);
}

int main(void) {
    CUdevice dev;
    setup_primary(&dev);
    struct kernels k = load_kernels();
    CUstream s;
    CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr out;
    CK(cuMemAlloc(&out, N * 4));

    /* Capture. */
    uint32_t n = N, seed = 11;
    void *args[] = {&out, &n, &seed};
    CK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    CK(cuMemsetD32Async(out, 0, N, s));
    CK(cuLaunchKernel(k.fill_u32, N / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
    CUstreamCaptureStatus st;
    cuuint64_t id;
    CUgraph cg;
    const CUgraphNode *deps;
    const CUgraphEdgeData *edges;
    size_t ndeps;
    CK(cuStreamGetCaptureInfo(s, &st, &id, &cg, &deps, &edges, &ndeps));
    EXPECT(deps != NULL && ndeps == 1);
    printf("capture status=%d deps=%zu\n", (int)st, ndeps);
    CUgraphNodeType t;
    CK(cuGraphNodeGetType(deps[0], &t));
    printf("last captured node type=%d\n", (int)t);
    CUgraph captured;
    CK(cuStreamEndCapture(s, &captured));
    size_t count = 0;
    CK(cuGraphGetNodes(captured, NULL, &count));
    printf("captured nodes=%zu\n", count);
    CUgraphExec cexec;
    char log[256] = {0};
    CUgraphNode err_node = NULL;
    CK(cuGraphInstantiate_v2(&cexec, captured, &err_node, log, sizeof log));
    CK(cuGraphLaunch(cexec, s));
    CK(cuStreamSynchronize(s));
    printf("captured graph checksum=%016llx\n", (unsigned long long)checksum(out));

    /* By hand: memset -> kernel -> host -> empty, event record after the kernel. */
    CUgraph g;
    CK(cuGraphCreate(&g, 0));
    CUDA_MEMSET_NODE_PARAMS ms = {.dst = out, .pitch = 0, .value = 0, .elementSize = 4, .width = N, .height = 1};
    CUcontext ctx;
    CK(cuCtxGetCurrent(&ctx));
    CUgraphNode nset, nkern, nhost, nempty, nrec;
    CK(cuGraphAddMemsetNode(&nset, g, NULL, 0, &ms, ctx));
    seed = 22;
    CUDA_KERNEL_NODE_PARAMS kp = {0};
    kp.func = k.fill_u32;
    kp.gridDimX = N / 256; kp.gridDimY = 1; kp.gridDimZ = 1;
    kp.blockDimX = 256; kp.blockDimY = 1; kp.blockDimZ = 1;
    kp.kernelParams = args;
    CK(cuGraphAddKernelNode(&nkern, g, &nset, 1, &kp));
    int one = 1;
    CUDA_HOST_NODE_PARAMS hp = {.fn = host_node, .userData = &one};
    CK(cuGraphAddHostNode(&nhost, g, &nkern, 1, &hp));
    CK(cuGraphAddEmptyNode(&nempty, g, NULL, 0));
    CK(cuGraphAddDependencies(g, &nhost, &nempty, NULL, 1));
    CUevent ev;
    CK(cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING));
    CK(cuGraphAddEventRecordNode(&nrec, g, &nkern, 1, ev));
    CUgraphNodeParams gp;
    memset(&gp, 0, sizeof gp);
    gp.type = CU_GRAPH_NODE_TYPE_EMPTY;
    CUgraphNode ngeneric;
    CK(cuGraphAddNode(&ngeneric, g, &nempty, NULL, 1, &gp));

    size_t nodes = 0, roots = 0, nedges = 0;
    CK(cuGraphGetNodes(g, NULL, &nodes));
    CK(cuGraphGetRootNodes(g, NULL, &roots));
    CK(cuGraphGetEdges(g, NULL, NULL, NULL, &nedges));
    printf("graph nodes=%zu roots=%zu edges=%zu\n", nodes, roots, nedges);
    CUgraphNode from[8], to[8];
    size_t cap = 8;
    CK(cuGraphGetEdges(g, from, to, NULL, &cap));
    int found = 0;
    for (size_t i = 0; i < cap; i++) found += (from[i] == nhost && to[i] == nempty);
    printf("edge host->empty found=%d\n", found);
    CUgraphNode kdeps[4];
    size_t nk = 4;
    CK(cuGraphNodeGetDependentNodes(nkern, kdeps, NULL, &nk));
    printf("kernel dependents=%zu\n", nk);

    CUDA_KERNEL_NODE_PARAMS back;
    CK(cuGraphKernelNodeGetParams(nkern, &back));
    EXPECT(back.kernelParams != NULL);
    printf("kernel node grid=%u block=%u n=%u seed=%u\n", back.gridDimX, back.blockDimX,
           *(uint32_t *)back.kernelParams[1], *(uint32_t *)back.kernelParams[2]);

    CUgraphExec exec;
    CK(cuGraphInstantiateWithFlags(&exec, g, 0));
    CK(cuGraphLaunch(exec, s));
    CK(cuStreamSynchronize(s));
    printf("graph run 1 checksum=%016llx host_runs=%d\n", (unsigned long long)checksum(out), host_runs);
    seed = 33;
    CK(cuGraphExecKernelNodeSetParams(exec, nkern, &kp));
    CK(cuGraphLaunch(exec, s));
    CK(cuStreamSynchronize(s));
    CK(cuEventSynchronize(ev));
    printf("graph run 2 checksum=%016llx host_runs=%d\n", (unsigned long long)checksum(out), host_runs);

    /* Stream attributes. */
    CUstreamAttrValue v;
    memset(&v, 0, sizeof v);
    v.syncPolicy = CU_SYNC_POLICY_YIELD;
    CK(cuStreamSetAttribute(s, CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY, &v));
    memset(&v, 0, sizeof v);
    CK(cuStreamGetAttribute(s, CU_STREAM_ATTRIBUTE_SYNCHRONIZATION_POLICY, &v));
    printf("stream sync policy=%d\n", (int)v.syncPolicy);

    char path[] = "/tmp/vgpu-graphs-XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0);
    CK(cuGraphDebugDotPrint(g, path, 0));
    FILE *f = fopen(path, "r");
    EXPECT(f != NULL);
    char head[8] = {0};
    size_t got = fread(head, 1, 7, f);
    fclose(f);
    unlink(path);
    printf("dot starts with digraph=%d\n", got == 7 && strncmp(head, "digraph", 7) == 0);

    CK(cuGraphExecDestroy(exec));
    CK(cuGraphExecDestroy(cexec));
    CK(cuGraphDestroy(g));
    CK(cuGraphDestroy(captured));
    CK(cuMemFree(out));
    printf("PASS graphs\n");
    return 0;
}
