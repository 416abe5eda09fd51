/* Virtual memory management for the fake driver (linked with libcuda.c): physical allocations
 * counted by references, mappings at any address (nothing is dereferenced). A handle this driver
 * did not make, or one whose last reference and mapping are gone, is answered
 * CUDA_ERROR_INVALID_VALUE (1), so that a test tells the driver's refusal from the host gate's
 * CUDA_ERROR_INVALID_HANDLE (400). */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;

#define VMM_MAX 64
static struct fake_vmm { size_t size; int refs; int maps; int live; } vmm[VMM_MAX];
static struct { CUdeviceptr va; int slot; } vmm_maps[VMM_MAX];
static pthread_mutex_t vmm_lock = PTHREAD_MUTEX_INITIALIZER;

static int vmm_slot(CUmemGenericAllocationHandle h) {
    for (int i = 0; i < VMM_MAX; i++)
        if (vmm[i].live && (uintptr_t)&vmm[i] == h) return i;
    return -1;
}
static void vmm_maybe_free(int i) {
    if (vmm[i].refs == 0 && vmm[i].maps == 0) vmm[i].live = 0;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const void *prop,
                     unsigned long long flags) {
    (void)prop; (void)flags;
    if (!h || !size) return 1;
    pthread_mutex_lock(&vmm_lock);
    for (int i = 0; i < VMM_MAX; i++) {
        if (!vmm[i].live) {
            vmm[i] = (struct fake_vmm){ size, 1, 0, 1 };
            *h = (uintptr_t)&vmm[i];
            pthread_mutex_unlock(&vmm_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return 2;
}
CUresult cuMemRelease(CUmemGenericAllocationHandle h) {
    pthread_mutex_lock(&vmm_lock);
    int i = vmm_slot(h);
    int ok = i >= 0 && vmm[i].refs > 0;
    if (ok) { vmm[i].refs--; vmm_maybe_free(i); }
    pthread_mutex_unlock(&vmm_lock);
    return ok ? 0 : 1;
}
CUresult cuMemMap(CUdeviceptr va, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long flags) {
    (void)flags;
    pthread_mutex_lock(&vmm_lock);
    int i = vmm_slot(h);
    int ok = i >= 0 && vmm[i].refs > 0 && va && offset + size <= vmm[i].size;
    if (ok) {
        ok = 0;
        for (int m = 0; m < VMM_MAX; m++) {
            if (!vmm_maps[m].va) { vmm_maps[m].va = va; vmm_maps[m].slot = i; vmm[i].maps++; ok = 1; break; }
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return ok ? 0 : 1;
}
CUresult cuMemUnmap(CUdeviceptr va, size_t size) {
    int n = 0;
    pthread_mutex_lock(&vmm_lock);
    for (int m = 0; m < VMM_MAX; m++) {
        if (vmm_maps[m].va && vmm_maps[m].va >= va && vmm_maps[m].va - va < size) {
            int i = vmm_maps[m].slot;
            vmm_maps[m].va = 0;
            vmm[i].maps--;
            vmm_maybe_free(i);
            n++;
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return n ? 0 : 1;
}
CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr) {
    int ok = 0;
    pthread_mutex_lock(&vmm_lock);
    for (int m = 0; h && m < VMM_MAX; m++) {
        if (vmm_maps[m].va && vmm_maps[m].va == (CUdeviceptr)(uintptr_t)addr) {
            int i = vmm_maps[m].slot;
            vmm[i].refs++;
            *h = (uintptr_t)&vmm[i];
            ok = 1;
            break;
        }
    }
    pthread_mutex_unlock(&vmm_lock);
    return ok ? 0 : 1;
}
CUresult cuMemGetAllocationPropertiesFromHandle(void *prop, CUmemGenericAllocationHandle h) {
    pthread_mutex_lock(&vmm_lock);
    int ok = prop && vmm_slot(h) >= 0;
    pthread_mutex_unlock(&vmm_lock);
    /* CUmemAllocationProp: type (1: pinned) first; the rest zero. */
    if (ok) { memset(prop, 0, 32); *(int *)prop = 1; }
    return ok ? 0 : 1;
}
