//! The one place that lists functions whose wire encoding is written by hand on both sides even
//! though [`crate::classify`] accepts their types: their arguments mean more than the header says
//! (an unsized array behind a plain pointer, say). Everything else the classifier accepts is
//! generated for guest and host alike; what it refuses is hand-written or unsupported anyway.
//!
//! A guest that only needs to do something *around* a forwarded call (drop a cache after
//! `cuModuleUnload`) lists the function as `custom` in the shim and calls the generated
//! forwarder from its handler: that needs no entry here.

/// Each entry says why the generated encoding would be wrong. An entry with no handler on the
/// guest stays unsupported (`CUDA_ERROR_NOT_SUPPORTED`), which is the point for some of them.
pub const HANDWRITTEN: &[&str] = &[
    // Unified addressing: `dst`/`src` may be guest host pointers, which would name host-worker
    // memory on the host. The host checks both are device memory; the guest routes host
    // pointers through the HtoD/DtoH paths.
    "cuMemcpy",
    "cuMemcpy_ptds",
    "cuMemcpyAsync",
    "cuMemcpyAsync_ptsz",
    // Managed memory from the driver would live in the host worker's address space, where the
    // guest's CPU could never touch it: region or mirrored memory at one address stands in
    // (`shim/src/handlers/managed.rs`, `host/src/dispatch/handlers/managed.rs`).
    "cuMemAllocManaged",
    // `pid` names a host process on the host: a guest must never lock or checkpoint host
    // processes. Unsupported.
    "cuCheckpointProcessCheckpoint",
    "cuCheckpointProcessGetRestoreThreadId",
    "cuCheckpointProcessGetState",
    "cuCheckpointProcessLock",
    "cuCheckpointProcessUnlock",
    // NVLink multicast can put a shared host's GPUs out of service; a guest does not get it.
    "cuMulticastAddDevice",
    "cuMulticastBindAddr",
    "cuMulticastBindMem",
    "cuMulticastCreate",
    "cuMulticastGetGranularity",
    "cuMulticastUnbind",
    // `pBorderColor` is an array of four floats, not one.
    "cuTexRefGetBorderColor",
    "cuTexRefSetBorderColor",
];
