/* The fake driver (libcuda.c, included whole) plus graphs, memory pools and link states, for the
 * handle gate's tests (host/tests/hostile_graph_handles.rs). Built as FakeDriver::Graphs.
 *
 * Every function here takes any handle value it is given and succeeds, so that a refusal a test
 * sees is the host's gate, never this driver; FAKE_CUDA_LOG gets a line per launch, node-type
 * query and destruction, with the handle, so a test sees which values reached the driver.
 *
 * - Graphs count up from 0x70000 in steps of 0x1000; their nodes are kept in a table (graph,
 *   node, the node it was cloned from), nodes count up from 0x900000 in steps of 0x10.
 * - Stream capture: cuStreamBeginCapture_v2 in mode m makes a graph of m + 1 empty nodes, in a
 *   chain; cuStreamGetCaptureInfo_v3 answers that graph and its last node as the dependency.
 * - Executable graphs count up from 0xE0000 and remember how many nodes their graph had:
 *   cuGraphExecUpdate_v2 with a graph of another node count fails with
 *   CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE (910), naming that graph's last node as the error node.
 * - Memory pools: device d's default pool is 0xD000 + d; created pools count up from 0xD100.
 * - Link states count up from 0x1C000.
 */
#include "libcuda.c"

typedef struct {
    uint32_t result;
    void *errorNode;
    void *errorFromNode;
} FakeUpdateResultInfo;

#define FAKE_NODES 256
static struct { uintptr_t graph, node, cloned_from; } fake_nodes[FAKE_NODES];
static uintptr_t fake_next_graph = 0x70000, fake_next_node = 0x900000;
static uintptr_t fake_next_exec = 0xE0000, fake_next_pool = 0xD100, fake_next_link = 0x1C000;
#define FAKE_EXECS 64
static struct { uintptr_t exec; size_t nodes; } fake_execs[FAKE_EXECS];

/* The caller holds fake_allocs_lock for all of these helpers. */
static uintptr_t new_graph(void) {
    uintptr_t g = fake_next_graph;
    fake_next_graph += 0x1000;
    return g;
}
static uintptr_t add_node(uintptr_t graph, uintptr_t cloned_from) {
    for (int i = 0; i < FAKE_NODES; i++) {
        if (!fake_nodes[i].node) {
            fake_nodes[i].graph = graph;
            fake_nodes[i].node = fake_next_node;
            fake_nodes[i].cloned_from = cloned_from;
            fake_next_node += 0x10;
            return fake_nodes[i].node;
        }
    }
    return 0;
}
static size_t nodes_of(uintptr_t graph, uintptr_t *last) {
    size_t n = 0;
    for (int i = 0; i < FAKE_NODES; i++) {
        if (fake_nodes[i].node && fake_nodes[i].graph == graph) {
            n++;
            if (last) *last = fake_nodes[i].node;
        }
    }
    return n;
}

CUresult cuGraphCreate(void **graph, unsigned flags) {
    (void)flags;
    if (!graph) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *graph = (void *)new_graph();
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuGraphAddEmptyNode(void **node, void *graph, void *const *deps, size_t n) {
    (void)deps; (void)n;
    if (!node) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *node = (void *)add_node((uintptr_t)graph, 0);
    pthread_mutex_unlock(&fake_allocs_lock);
    return *node ? 0 : 2;
}
CUresult cuGraphGetNodes(void *graph, void **nodes, size_t *count) {
    if (!count) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    size_t found = 0;
    for (int i = 0; i < FAKE_NODES; i++) {
        if (fake_nodes[i].node && fake_nodes[i].graph == (uintptr_t)graph) {
            if (nodes && found < *count) nodes[found] = (void *)fake_nodes[i].node;
            found++;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    if (nodes && found > *count) found = *count;
    *count = found;
    return 0;
}
CUresult cuGraphNodeGetType(void *node, int *type) {
    if (!type) return 1;
    fake_log("cuGraphNodeGetType %llx", (uintptr_t)node, 0);
    *type = 5; /* CU_GRAPH_NODE_TYPE_EMPTY */
    return 0;
}
CUresult cuGraphAddDependencies(void *graph, void *const *from, void *const *to, size_t n) {
    (void)graph; (void)from; (void)to;
    fake_log("cuGraphAddDependencies n=%llu", n, 0);
    return 0;
}
CUresult cuGraphDestroyNode(void *node) {
    fake_log("cuGraphDestroyNode %llx", (uintptr_t)node, 0);
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_NODES; i++)
        if (fake_nodes[i].node == (uintptr_t)node) fake_nodes[i].node = 0;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuGraphDestroy(void *graph) {
    fake_log("cuGraphDestroy %llx", (uintptr_t)graph, 0);
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_NODES; i++)
        if (fake_nodes[i].graph == (uintptr_t)graph) fake_nodes[i].node = 0;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuGraphClone(void **clone, void *graph) {
    if (!clone) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    uintptr_t c = new_graph();
    for (int i = 0; i < FAKE_NODES; i++)
        if (fake_nodes[i].node && fake_nodes[i].graph == (uintptr_t)graph)
            add_node(c, fake_nodes[i].node);
    pthread_mutex_unlock(&fake_allocs_lock);
    *clone = (void *)c;
    return 0;
}
CUresult cuGraphNodeFindInClone(void **node, void *original, void *clone) {
    if (!node) return 1;
    *node = NULL;
    pthread_mutex_lock(&fake_allocs_lock);
    for (int i = 0; i < FAKE_NODES; i++)
        if (fake_nodes[i].node && fake_nodes[i].graph == (uintptr_t)clone &&
            fake_nodes[i].cloned_from == (uintptr_t)original)
            *node = (void *)fake_nodes[i].node;
    pthread_mutex_unlock(&fake_allocs_lock);
    return *node ? 0 : 1;
}
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long flags) {
    (void)flags;
    if (!exec) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    size_t n = nodes_of((uintptr_t)graph, NULL);
    uintptr_t e = fake_next_exec;
    fake_next_exec += 0x100;
    for (int i = 0; i < FAKE_EXECS; i++) {
        if (!fake_execs[i].exec) {
            fake_execs[i].exec = e;
            fake_execs[i].nodes = n;
            break;
        }
    }
    pthread_mutex_unlock(&fake_allocs_lock);
    *exec = (void *)e;
    return 0;
}
CUresult cuGraphExecUpdate_v2(void *exec, void *graph, FakeUpdateResultInfo *info) {
    if (!info) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    uintptr_t last = 0;
    size_t n = nodes_of((uintptr_t)graph, &last), was = n;
    for (int i = 0; i < FAKE_EXECS; i++)
        if (fake_execs[i].exec == (uintptr_t)exec) was = fake_execs[i].nodes;
    pthread_mutex_unlock(&fake_allocs_lock);
    info->errorFromNode = NULL;
    if (n != was) {
        info->result = 2; /* CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED */
        info->errorNode = (void *)last;
        return 910;
    }
    info->result = 0;
    info->errorNode = NULL;
    return 0;
}
CUresult cuGraphLaunch(void *exec, void *stream) {
    (void)stream;
    fake_log("cuGraphLaunch %llx", (uintptr_t)exec, 0);
    return 0;
}
CUresult cuGraphExecDestroy(void *exec) {
    fake_log("cuGraphExecDestroy %llx", (uintptr_t)exec, 0);
    return 0;
}

/* Stream capture: one capture at a time is enough for the tests. */
static uintptr_t fake_capture_stream, fake_capture_graph, fake_capture_last;
CUresult cuStreamBeginCapture_v2(void *stream, int mode) {
    pthread_mutex_lock(&fake_allocs_lock);
    fake_capture_stream = (uintptr_t)stream;
    fake_capture_graph = new_graph();
    for (int i = 0; i <= mode; i++) fake_capture_last = add_node(fake_capture_graph, 0);
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuStreamGetCaptureInfo_v3(void *stream, int *status, unsigned long long *id,
                                   void **graph, void *const **deps, const void **edges,
                                   size_t *n) {
    static void *dep;
    if (!status) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int capturing = fake_capture_graph && fake_capture_stream == (uintptr_t)stream;
    dep = (void *)fake_capture_last;
    *status = capturing;
    if (id) *id = 1;
    if (graph) *graph = capturing ? (void *)fake_capture_graph : NULL;
    if (deps) *deps = capturing ? &dep : NULL;
    if (edges) *edges = NULL;
    if (n) *n = capturing ? 1 : 0;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuStreamUpdateCaptureDependencies_v2(void *stream, void **deps, const void *edges,
                                              size_t n, unsigned flags) {
    (void)stream; (void)deps; (void)edges; (void)flags;
    fake_log("cuStreamUpdateCaptureDependencies_v2 n=%llu", n, 0);
    return 0;
}
CUresult cuStreamEndCapture(void *stream, void **graph) {
    if (!graph) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    int capturing = fake_capture_graph && fake_capture_stream == (uintptr_t)stream;
    *graph = capturing ? (void *)fake_capture_graph : NULL;
    fake_capture_graph = 0;
    pthread_mutex_unlock(&fake_allocs_lock);
    return capturing ? 0 : 401; /* CUDA_ERROR_ILLEGAL_STATE */
}

/* Memory pools and link states. */
CUresult cuDeviceGetDefaultMemPool(void **pool, int dev) {
    if (!pool) return 1;
    *pool = (void *)(uintptr_t)(0xD000 + dev);
    return 0;
}
CUresult cuMemPoolCreate(void **pool, const void *props) {
    if (!pool || !props) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *pool = (void *)fake_next_pool;
    fake_next_pool += 0x100;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuMemPoolTrimTo(void *pool, size_t keep) {
    fake_log("cuMemPoolTrimTo %llx keep=%llu", (uintptr_t)pool, keep);
    return 0;
}
CUresult cuMemPoolDestroy(void *pool) {
    fake_log("cuMemPoolDestroy %llx", (uintptr_t)pool, 0);
    return 0;
}
CUresult cuLinkCreate_v2(unsigned n, void *options, void **values, void **state) {
    (void)n; (void)options; (void)values;
    if (!state) return 1;
    pthread_mutex_lock(&fake_allocs_lock);
    *state = (void *)fake_next_link;
    fake_next_link += 0x100;
    pthread_mutex_unlock(&fake_allocs_lock);
    return 0;
}
CUresult cuLinkDestroy(void *state) {
    fake_log("cuLinkDestroy %llx", (uintptr_t)state, 0);
    return 0;
}
