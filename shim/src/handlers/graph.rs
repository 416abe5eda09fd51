//! Graphs built by hand (`cuGraphAdd*Node`, `cuGraphAddNode`), their queries (nodes, edges,
//! dependencies), node parameters, instantiation and the DOT dump. Host halves:
//! `host/src/dispatch/handlers/graph.rs`, which documents each wire format.
//!
//! Every node kind travels as one "node body" (`u32 type` then its fields), whichever function
//! adds or updates it. Supported kinds: kernel, memcpy between device memory, memset, host,
//! empty, event record/wait. Others get `CUDA_ERROR_NOT_SUPPORTED` with one log line.
//!
//! Lifetimes of what the guest hands out: kernel parameters returned by
//! `cuGraphKernelNodeGetParams_v2` live in guest storage kept per node until the next such query
//! for the same node.
#![allow(non_snake_case)]

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use cuda_headers::*;
use protocol::{Decoder, Encoder};

use super::arrays::{get_edge, get_handles, put_deps, write, write_all};
use super::launch::put_params;
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// The fields of `CUDA_KERNEL_NODE_PARAMS` (v2 and v3 have the same layout but distinct types).
struct KernelFields {
    func: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    kern: CUkernel,
    ctx: CUcontext,
}

macro_rules! kernel_fields {
    ($p:expr) => {
        KernelFields {
            func: $p.func,
            grid: [$p.gridDimX, $p.gridDimY, $p.gridDimZ],
            block: [$p.blockDimX, $p.blockDimY, $p.blockDimZ],
            shared: $p.sharedMemBytes,
            kernel_params: $p.kernelParams,
            extra: $p.extra,
            kern: $p.kern,
            ctx: $p.ctx,
        }
    };
}

/// Node kinds on the wire (`CUgraphNodeType` values).
const KERNEL: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL.0;
const MEMCPY: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY.0;
const MEMSET: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET.0;
const HOST: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST.0;
const EMPTY: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY.0;
const WAIT_EVENT: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_WAIT_EVENT.0;
const EVENT_RECORD: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EVENT_RECORD.0;

/// A node body, packed before the call (packing kernel parameters may itself ask the host for
/// the kernel's parameter layout on this thread's channel).
struct Body(Vec<u8>);

impl Body {
    fn new(kind: u32) -> Self {
        let mut buf = Vec::new();
        Encoder::new(&mut buf).put(kind);
        Self(buf)
    }

    fn enc(&mut self) -> Encoder<'_> {
        Encoder::new(&mut self.0)
    }

    /// Kernel: `u64 func, u64 kern, u64 ctx, 3 × u32 grid, 3 × u32 block, u32 shared, params`
    /// (`launch.rs`'s packing).
    ///
    /// # Safety
    /// `k`'s parameter pointers follow the driver API's contract.
    unsafe fn kernel(k: &KernelFields) -> CuResult<Self> {
        let mut body = Self::new(KERNEL);
        let handle = if k.func.is_null() {
            k.kern as u64
        } else {
            k.func as u64
        };
        let mut params = Vec::new();
        // SAFETY: per the contract.
        unsafe {
            put_params(
                &mut Encoder::new(&mut params),
                handle,
                k.kernel_params,
                k.extra,
            )
        }?;
        let mut enc = body.enc();
        enc.put(k.func as u64);
        enc.put(k.kern as u64);
        enc.put(k.ctx as u64);
        for v in k.grid.into_iter().chain(k.block).chain([k.shared]) {
            enc.put(v);
        }
        enc.put_raw_bytes(&params);
        Ok(body)
    }

    /// Memcpy: `u64 ctx, CUDA_MEMCPY3D` (host pointers cleared). Guest memory cannot be reached
    /// by the GPU when the graph runs, so copies touching it are refused.
    fn memcpy(copy: *const CUDA_MEMCPY3D, ctx: CUcontext) -> CuResult<Self> {
        // SAFETY: the caller passes a valid descriptor (driver API contract).
        let mut c = unsafe { copy.as_ref() }
            .copied()
            .ok_or(CuError::INVALID_VALUE)?;
        for (kind, addr) in [
            (c.srcMemoryType, c.srcDevice),
            (c.dstMemoryType, c.dstDevice),
        ] {
            let guest = match kind {
                CUmemorytype::CU_MEMORYTYPE_HOST => true,
                CUmemorytype::CU_MEMORYTYPE_UNIFIED => super::memory::is_guest_memory(addr)?,
                _ => false,
            };
            if guest {
                log!(
                    Level::Warn,
                    "graph memcpy nodes that read or write guest host memory are not supported: the GPU cannot reach it when the graph runs"
                );
                return Err(CuError::NOT_SUPPORTED);
            }
        }
        c.srcHost = std::ptr::null();
        c.dstHost = std::ptr::null_mut();
        let mut body = Self::new(MEMCPY);
        let mut enc = body.enc();
        enc.put(ctx as u64);
        // SAFETY: CUDA_MEMCPY3D is a plain C struct; its host pointers are cleared.
        unsafe { enc.put_raw(&c) };
        Ok(body)
    }

    /// Memset: `CUDA_MEMSET_NODE_PARAMS_v2` (device pointer, sizes, context).
    fn memset(p: &CUDA_MEMSET_NODE_PARAMS_v2) -> Self {
        let mut body = Self::new(MEMSET);
        // SAFETY: a plain C struct of integers, a device address and a handle.
        unsafe { body.enc().put_raw(p) };
        body
    }

    /// Host: `u64 fn, u64 data`; the function runs in this process (`hostfn.rs`).
    fn host(func: CUhostFn, data: *mut c_void) -> CuResult<Self> {
        let func = func.ok_or(CuError::INVALID_VALUE)?;
        super::hostfn::ensure_callback_thread();
        let mut body = Self::new(HOST);
        let mut enc = body.enc();
        enc.put(func as usize as u64);
        enc.put(data as u64);
        Ok(body)
    }

    /// Events: `u64 event`.
    fn event(kind: u32, event: CUevent) -> Self {
        let mut body = Self::new(kind);
        body.enc().put(event as u64);
        body
    }

    fn empty() -> Self {
        Self::new(EMPTY)
    }

    /// The body of a generic `CUgraphNodeParams`.
    ///
    /// # Safety
    /// `p` is valid; the member its type selects follows the driver API's contract.
    unsafe fn generic(p: *const CUgraphNodeParams) -> CuResult<Self> {
        // SAFETY: per the contract.
        let p = unsafe { p.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
        let u = &p.__bindgen_anon_1;
        // Each arm reads the union member that `type_` says is live.
        match p.type_.0 {
            // SAFETY: a kernel node; its parameter pointers follow the contract.
            KERNEL => unsafe { Self::kernel(&kernel_fields!(u.kernel)) },
            // SAFETY: a memcpy node.
            MEMCPY => unsafe { Self::memcpy(&u.memcpy.copyParams, u.memcpy.copyCtx) },
            // SAFETY: a memset node.
            MEMSET => Ok(Self::memset(unsafe { &u.memset })),
            // SAFETY: a host node.
            HOST => unsafe { Self::host(u.host.fn_, u.host.userData) },
            EMPTY => Ok(Self::empty()),
            // SAFETY: an event-wait node.
            WAIT_EVENT => Ok(Self::event(WAIT_EVENT, unsafe { u.eventWait.event })),
            // SAFETY: an event-record node.
            EVENT_RECORD => Ok(Self::event(EVENT_RECORD, unsafe { u.eventRecord.event })),
            other => {
                log!(
                    Level::Warn,
                    "graph node type {other} is not supported (kernel, memcpy, memset, host, empty and event nodes are)"
                );
                Err(CuError::NOT_SUPPORTED)
            }
        }
    }
}

/// Adds a node: `u64 graph, deps, body` → `u64 node`.
///
/// # Safety
/// `deps`/`edges` hold `n` entries (edges may be NULL).
unsafe fn add(
    id: u32,
    out: *mut CUgraphNode,
    graph: CUgraph,
    deps: *const CUgraphNode,
    edges: *const CUgraphEdgeData,
    n: usize,
    body: CuResult<Body>,
) -> CuResult {
    let body = body?;
    if out.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut head = Vec::new();
    let mut enc = Encoder::new(&mut head);
    enc.put(graph as u64);
    // SAFETY: per the contract.
    unsafe { put_deps(&mut enc, deps, edges, n) }?;
    call_with(
        id,
        |enc| {
            enc.put_raw_bytes(&head);
            enc.put_raw_bytes(&body.0);
        },
        |dec| {
            write(
                out,
                dec.get::<u64>().map_err(bad_response)? as usize as CUgraphNode,
            );
            Ok(())
        },
    )
}

/// Sets a node's parameters: `u64 exec (0 for the graph itself), u64 node, body` → result.
fn set(id: u32, exec: CUgraphExec, node: CUgraphNode, body: CuResult<Body>) -> CuResult {
    let body = body?;
    call_with(
        id,
        |enc| {
            enc.put(exec as u64);
            enc.put(node as u64);
            enc.put_raw_bytes(&body.0);
        },
        |_| Ok(()),
    )
}

/// Adds a kernel node.
///
/// # Safety
/// Arrays hold `numDependencies` entries; `nodeParams` follows the driver API's contract.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL arguments; the host's result.
pub unsafe fn cuGraphAddKernelNode_v2(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    nodeParams: *const CUDA_KERNEL_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: per the contract.
    let body = unsafe { Body::kernel(&kernel_fields!(p)) };
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddKernelNode_v2),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            body,
        )
    }
}

/// Adds a memcpy node between device memory (or arrays).
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` when an end is guest memory; the host's result.
pub unsafe fn cuGraphAddMemcpyNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    copyParams: *const CUDA_MEMCPY3D,
    ctx: CUcontext,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddMemcpyNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Body::memcpy(copyParams, ctx),
        )
    }
}

/// Adds a memset node.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddMemsetNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    memsetParams: *const CUDA_MEMSET_NODE_PARAMS,
    ctx: CUcontext,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { memsetParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    let v2 = CUDA_MEMSET_NODE_PARAMS_v2 {
        dst: p.dst,
        pitch: p.pitch,
        value: p.value,
        elementSize: p.elementSize,
        width: p.width,
        height: p.height,
        ctx,
    };
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddMemsetNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Ok(Body::memset(&v2)),
        )
    }
}

/// Adds an empty node.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddEmptyNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddEmptyNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Ok(Body::empty()),
        )
    }
}

/// Adds an event-record node.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddEventRecordNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    event: CUevent,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddEventRecordNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Ok(Body::event(EVENT_RECORD, event)),
        )
    }
}

/// Adds an event-wait node.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddEventWaitNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    event: CUevent,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddEventWaitNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Ok(Body::event(WAIT_EVENT, event)),
        )
    }
}

/// Adds a host node; its function runs in this process each time the graph executes.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`]; the function is safe to call from another thread.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL function; the host's result.
pub unsafe fn cuGraphAddHostNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    nodeParams: *const CUDA_HOST_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddHostNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Body::host(p.fn_, p.userData),
        )
    }
}

/// Adds a node of any supported type.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`].
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` for unsupported node types; the host's result.
pub unsafe fn cuGraphAddNode(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    numDependencies: usize,
    nodeParams: *mut CUgraphNodeParams,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddNode),
            phGraphNode,
            hGraph,
            dependencies,
            std::ptr::null(),
            numDependencies,
            Body::generic(nodeParams),
        )
    }
}

/// As [`cuGraphAddNode`], with edge data.
///
/// # Safety
/// As [`cuGraphAddKernelNode_v2`]; a non-NULL `dependencyData` holds `numDependencies` entries.
///
/// # Errors
/// As [`cuGraphAddNode`].
pub unsafe fn cuGraphAddNode_v2(
    phGraphNode: *mut CUgraphNode,
    hGraph: CUgraph,
    dependencies: *const CUgraphNode,
    dependencyData: *const CUgraphEdgeData,
    numDependencies: usize,
    nodeParams: *mut CUgraphNodeParams,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        add(
            shim_macros::cuda_call_id!(cuGraphAddNode_v2),
            phGraphNode,
            hGraph,
            dependencies,
            dependencyData,
            numDependencies,
            Body::generic(nodeParams),
        )
    }
}

/// Updates a node of any supported type.
///
/// # Safety
/// `nodeParams` follows the driver API's contract.
///
/// # Errors
/// As [`cuGraphAddNode`].
pub unsafe fn cuGraphNodeSetParams(
    hNode: CUgraphNode,
    nodeParams: *mut CUgraphNodeParams,
) -> CuResult {
    // SAFETY: per the contract.
    let body = unsafe { Body::generic(nodeParams) };
    set(
        shim_macros::cuda_call_id!(cuGraphNodeSetParams),
        std::ptr::null_mut(),
        hNode,
        body,
    )
}

/// Updates a node of an executable graph.
///
/// # Safety
/// As [`cuGraphNodeSetParams`].
///
/// # Errors
/// As [`cuGraphAddNode`].
pub unsafe fn cuGraphExecNodeSetParams(
    hGraphExec: CUgraphExec,
    hNode: CUgraphNode,
    nodeParams: *mut CUgraphNodeParams,
) -> CuResult {
    // SAFETY: per the contract.
    let body = unsafe { Body::generic(nodeParams) };
    set(
        shim_macros::cuda_call_id!(cuGraphExecNodeSetParams),
        hGraphExec,
        hNode,
        body,
    )
}

/// Updates a kernel node.
///
/// # Safety
/// `nodeParams` follows the driver API's contract.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeSetParams_v2(
    hNode: CUgraphNode,
    nodeParams: *const CUDA_KERNEL_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: per the contract.
    let body = unsafe { Body::kernel(&kernel_fields!(p)) };
    set(
        shim_macros::cuda_call_id!(cuGraphKernelNodeSetParams_v2),
        std::ptr::null_mut(),
        hNode,
        body,
    )
}

/// Updates a kernel node of an executable graph.
///
/// # Safety
/// As [`cuGraphKernelNodeSetParams_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphExecKernelNodeSetParams_v2(
    hGraphExec: CUgraphExec,
    hNode: CUgraphNode,
    nodeParams: *const CUDA_KERNEL_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: per the contract.
    let body = unsafe { Body::kernel(&kernel_fields!(p)) };
    set(
        shim_macros::cuda_call_id!(cuGraphExecKernelNodeSetParams_v2),
        hGraphExec,
        hNode,
        body,
    )
}

/// Updates a memcpy node.
///
/// # Safety
/// `nodeParams` is valid.
///
/// # Errors
/// As [`cuGraphAddMemcpyNode`].
pub unsafe fn cuGraphMemcpyNodeSetParams(
    hNode: CUgraphNode,
    nodeParams: *const CUDA_MEMCPY3D,
) -> CuResult {
    set(
        shim_macros::cuda_call_id!(cuGraphMemcpyNodeSetParams),
        std::ptr::null_mut(),
        hNode,
        Body::memcpy(nodeParams, std::ptr::null_mut()),
    )
}

/// Updates a memcpy node of an executable graph.
///
/// # Safety
/// `copyParams` is valid.
///
/// # Errors
/// As [`cuGraphAddMemcpyNode`].
pub unsafe fn cuGraphExecMemcpyNodeSetParams(
    hGraphExec: CUgraphExec,
    hNode: CUgraphNode,
    copyParams: *const CUDA_MEMCPY3D,
    ctx: CUcontext,
) -> CuResult {
    set(
        shim_macros::cuda_call_id!(cuGraphExecMemcpyNodeSetParams),
        hGraphExec,
        hNode,
        Body::memcpy(copyParams, ctx),
    )
}

/// Updates a host node.
///
/// # Safety
/// `nodeParams` is valid.
///
/// # Errors
/// As [`cuGraphAddHostNode`].
pub unsafe fn cuGraphHostNodeSetParams(
    hNode: CUgraphNode,
    nodeParams: *const CUDA_HOST_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    set(
        shim_macros::cuda_call_id!(cuGraphHostNodeSetParams),
        std::ptr::null_mut(),
        hNode,
        Body::host(p.fn_, p.userData),
    )
}

/// Updates a host node of an executable graph.
///
/// # Safety
/// `nodeParams` is valid.
///
/// # Errors
/// As [`cuGraphAddHostNode`].
pub unsafe fn cuGraphExecHostNodeSetParams(
    hGraphExec: CUgraphExec,
    hNode: CUgraphNode,
    nodeParams: *const CUDA_HOST_NODE_PARAMS,
) -> CuResult {
    // SAFETY: per the contract.
    let p = unsafe { nodeParams.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    set(
        shim_macros::cuda_call_id!(cuGraphExecHostNodeSetParams),
        hGraphExec,
        hNode,
        Body::host(p.fn_, p.userData),
    )
}

/// Kernel parameters handed out by `cuGraphKernelNodeGetParams_v2`, per node: the packed bytes
/// and a pointer per parameter into them (as addresses, so the table is `Send`).
static KERNEL_PARAMS: Mutex<Option<HashMap<u64, KernelParamsCopy>>> = Mutex::new(None);

/// Packed parameter bytes and each parameter's address in them.
type KernelParamsCopy = (Vec<u8>, Vec<usize>);

/// A kernel node's parameters. `kernelParams` points to guest storage that stays valid until
/// the next query of the same node; `extra` is NULL.
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeGetParams_v2(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_KERNEL_NODE_PARAMS,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphKernelNodeGetParams_v2),
        |enc| enc.put(hNode as u64),
        |dec| {
            let get = |d: &mut Decoder<'_>| d.get::<u64>().map_err(bad_response);
            let get32 = |d: &mut Decoder<'_>| d.get::<u32>().map_err(bad_response);
            let (func, kern, ctx) = (get(dec)?, get(dec)?, get(dec)?);
            let mut dims = [0u32; 7];
            for d in &mut dims {
                *d = get32(dec)?;
            }
            let mut packed = dec.get_bytes().map_err(bad_response)?.to_vec();
            let n = get32(dec)? as usize;
            let mut pointers = Vec::with_capacity(n);
            for _ in 0..n {
                let (offset, size) = (get32(dec)? as usize, get32(dec)? as usize);
                if offset + size > packed.len() {
                    return Err(CuError::UNKNOWN);
                }
                pointers.push(packed.as_mut_ptr() as usize + offset);
            }
            let kernel_params = if pointers.is_empty() {
                std::ptr::null_mut()
            } else {
                pointers.as_mut_ptr().cast::<*mut c_void>()
            };
            // Moving the vectors into the table keeps their heap buffers where they are.
            KERNEL_PARAMS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(hNode as u64, (packed, pointers));
            write(
                nodeParams,
                CUDA_KERNEL_NODE_PARAMS {
                    func: func as usize as CUfunction,
                    gridDimX: dims[0],
                    gridDimY: dims[1],
                    gridDimZ: dims[2],
                    blockDimX: dims[3],
                    blockDimY: dims[4],
                    blockDimZ: dims[5],
                    sharedMemBytes: dims[6],
                    kernelParams: kernel_params,
                    extra: std::ptr::null_mut(),
                    kern: kern as usize as CUkernel,
                    ctx: ctx as usize as CUcontext,
                },
            );
            Ok(())
        },
    )
}

/// A memcpy node's parameters.
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphMemcpyNodeGetParams(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_MEMCPY3D,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphMemcpyNodeGetParams),
        |enc| enc.put(hNode as u64),
        |dec| {
            // SAFETY: the host sends one CUDA_MEMCPY3D with its host pointers cleared.
            let copy: CUDA_MEMCPY3D = unsafe { dec.get_raw() }.map_err(bad_response)?;
            write(nodeParams, copy);
            Ok(())
        },
    )
}

/// A host node's function and data (the guest's own values).
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphHostNodeGetParams(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_HOST_NODE_PARAMS,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphHostNodeGetParams),
        |enc| enc.put(hNode as u64),
        |dec| {
            let func: u64 = dec.get().map_err(bad_response)?;
            let data: u64 = dec.get().map_err(bad_response)?;
            // SAFETY: `func` is the CUhostFn this process registered for the node (or 0).
            let fn_: CUhostFn = unsafe { std::mem::transmute::<usize, CUhostFn>(func as usize) };
            write(
                nodeParams,
                CUDA_HOST_NODE_PARAMS {
                    fn_,
                    userData: data as usize as *mut c_void,
                },
            );
            Ok(())
        },
    )
}

/// Queries returning node arrays: `u64 handle, u64 capacity, u8 arrays` (bit 0 first node
/// array, bit 1 second node array, bit 2 edge data) → `u64 count`, then `capacity` entries of
/// each array asked for.
///
/// # Safety
/// Non-NULL arrays hold `*count` entries; `count` is valid.
unsafe fn query(
    id: u32,
    handle: u64,
    first: *mut CUgraphNode,
    second: *mut CUgraphNode,
    edges: *mut CUgraphEdgeData,
    count: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    let Some(&given) = (unsafe { count.as_ref() }) else {
        return Err(CuError::INVALID_VALUE);
    };
    let capacity = if first.is_null() { 0 } else { given };
    let mask = u8::from(!first.is_null())
        | u8::from(!second.is_null()) << 1
        | u8::from(!edges.is_null()) << 2;
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(capacity as u64);
            enc.put(mask);
        },
        |dec| {
            let n: u64 = dec.get().map_err(bad_response)?;
            for (bit, out) in [(1u8, first), (2, second)] {
                if mask & bit != 0 {
                    let nodes: Vec<CUgraphNode> = get_handles(dec, capacity)?;
                    // SAFETY: per the contract, `capacity` entries.
                    unsafe { write_all(out, &nodes) };
                }
            }
            if mask & 4 != 0 && capacity > 0 {
                let data = (0..capacity)
                    .map(|_| get_edge(dec))
                    .collect::<CuResult<Vec<_>>>()?;
                // SAFETY: per the contract, `capacity` entries.
                unsafe { write_all(edges, &data) };
            }
            write(count, n as usize);
            Ok(())
        },
    )
}

/// The graph's nodes.
///
/// # Safety
/// `nodes` is NULL or holds `*numNodes` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphGetNodes(
    hGraph: CUgraph,
    nodes: *mut CUgraphNode,
    numNodes: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphGetNodes),
            hGraph as u64,
            nodes,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            numNodes,
        )
    }
}

/// The graph's root nodes.
///
/// # Safety
/// As [`cuGraphGetNodes`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphGetRootNodes(
    hGraph: CUgraph,
    rootNodes: *mut CUgraphNode,
    numRootNodes: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphGetRootNodes),
            hGraph as u64,
            rootNodes,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            numRootNodes,
        )
    }
}

/// The graph's edges.
///
/// # Safety
/// `from`/`to` are both NULL or hold `*numEdges` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphGetEdges(
    hGraph: CUgraph,
    from: *mut CUgraphNode,
    to: *mut CUgraphNode,
    numEdges: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphGetEdges),
            hGraph as u64,
            from,
            to,
            std::ptr::null_mut(),
            numEdges,
        )
    }
}

/// The graph's edges with their data.
///
/// # Safety
/// As [`cuGraphGetEdges`]; a non-NULL `edgeData` holds `*numEdges` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphGetEdges_v2(
    hGraph: CUgraph,
    from: *mut CUgraphNode,
    to: *mut CUgraphNode,
    edgeData: *mut CUgraphEdgeData,
    numEdges: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphGetEdges_v2),
            hGraph as u64,
            from,
            to,
            edgeData,
            numEdges,
        )
    }
}

/// A node's dependencies.
///
/// # Safety
/// As [`cuGraphGetNodes`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphNodeGetDependencies(
    hNode: CUgraphNode,
    dependencies: *mut CUgraphNode,
    numDependencies: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphNodeGetDependencies),
            hNode as u64,
            dependencies,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            numDependencies,
        )
    }
}

/// A node's dependencies with edge data.
///
/// # Safety
/// As [`cuGraphGetEdges_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphNodeGetDependencies_v2(
    hNode: CUgraphNode,
    dependencies: *mut CUgraphNode,
    edgeData: *mut CUgraphEdgeData,
    numDependencies: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphNodeGetDependencies_v2),
            hNode as u64,
            dependencies,
            std::ptr::null_mut(),
            edgeData,
            numDependencies,
        )
    }
}

/// A node's dependents.
///
/// # Safety
/// As [`cuGraphGetNodes`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphNodeGetDependentNodes(
    hNode: CUgraphNode,
    dependentNodes: *mut CUgraphNode,
    numDependentNodes: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphNodeGetDependentNodes),
            hNode as u64,
            dependentNodes,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            numDependentNodes,
        )
    }
}

/// A node's dependents with edge data.
///
/// # Safety
/// As [`cuGraphGetEdges_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphNodeGetDependentNodes_v2(
    hNode: CUgraphNode,
    dependentNodes: *mut CUgraphNode,
    edgeData: *mut CUgraphEdgeData,
    numDependentNodes: *mut usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        query(
            shim_macros::cuda_call_id!(cuGraphNodeGetDependentNodes_v2),
            hNode as u64,
            dependentNodes,
            std::ptr::null_mut(),
            edgeData,
            numDependentNodes,
        )
    }
}

/// Edges added or removed: `u64 graph, u32 n, n × u64 from, deps (to, with edge data)`.
///
/// # Safety
/// Arrays hold `n` entries.
unsafe fn edges(
    id: u32,
    graph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
) -> CuResult {
    let mut body = Vec::new();
    let mut enc = Encoder::new(&mut body);
    enc.put(graph as u64);
    // SAFETY: per the contract.
    super::arrays::put_handles(&mut enc, unsafe { super::arrays::slice(from, n) }?);
    // SAFETY: per the contract.
    unsafe { put_deps(&mut enc, to, data, n) }?;
    call_with(id, |enc| enc.put_raw_bytes(&body), |_| Ok(()))
}

/// Adds edges.
///
/// # Safety
/// `from`/`to` hold `numDependencies` entries.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddDependencies(
    hGraph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    numDependencies: usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        edges(
            shim_macros::cuda_call_id!(cuGraphAddDependencies),
            hGraph,
            from,
            to,
            std::ptr::null(),
            numDependencies,
        )
    }
}

/// Adds edges with data.
///
/// # Safety
/// Arrays hold `numDependencies` entries (`edgeData` may be NULL).
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphAddDependencies_v2(
    hGraph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    edgeData: *const CUgraphEdgeData,
    numDependencies: usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        edges(
            shim_macros::cuda_call_id!(cuGraphAddDependencies_v2),
            hGraph,
            from,
            to,
            edgeData,
            numDependencies,
        )
    }
}

/// Removes edges.
///
/// # Safety
/// As [`cuGraphAddDependencies`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphRemoveDependencies(
    hGraph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    numDependencies: usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        edges(
            shim_macros::cuda_call_id!(cuGraphRemoveDependencies),
            hGraph,
            from,
            to,
            std::ptr::null(),
            numDependencies,
        )
    }
}

/// Removes edges with data.
///
/// # Safety
/// As [`cuGraphAddDependencies_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphRemoveDependencies_v2(
    hGraph: CUgraph,
    from: *const CUgraphNode,
    to: *const CUgraphNode,
    edgeData: *const CUgraphEdgeData,
    numDependencies: usize,
) -> CuResult {
    // SAFETY: per the contract.
    unsafe {
        edges(
            shim_macros::cuda_call_id!(cuGraphRemoveDependencies_v2),
            hGraph,
            from,
            to,
            edgeData,
            numDependencies,
        )
    }
}

fn instantiate(
    id: u32,
    exec: *mut CUgraphExec,
    graph: CUgraph,
    error_node: *mut CUgraphNode,
    log_buffer: *mut c_char,
    size: usize,
) -> CuResult {
    if exec.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let size = if log_buffer.is_null() { 0 } else { size };
    call_with(
        id,
        |enc| {
            enc.put(graph as u64);
            enc.put(size as u64);
            enc.put_flag(!error_node.is_null());
        },
        |dec| {
            let e: u64 = dec.get().map_err(bad_response)?;
            let node: u64 = dec.get().map_err(bad_response)?;
            let log = dec.get_bytes().map_err(bad_response)?;
            write(exec, e as usize as CUgraphExec);
            write(error_node, node as usize as CUgraphNode);
            // SAFETY: the caller's buffer holds `size` bytes and the host sends at most that.
            unsafe { write_all(log_buffer.cast::<u8>(), &log[..log.len().min(size)]) };
            Ok(())
        },
    )
}

/// Instantiates a graph; on failure the error node and the log come back too.
///
/// # Safety
/// `logBuffer` is NULL or holds `bufferSize` bytes; other out-pointers are valid or NULL.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphInstantiate(
    phGraphExec: *mut CUgraphExec,
    hGraph: CUgraph,
    phErrorNode: *mut CUgraphNode,
    logBuffer: *mut c_char,
    bufferSize: usize,
) -> CuResult {
    instantiate(
        shim_macros::cuda_call_id!(cuGraphInstantiate),
        phGraphExec,
        hGraph,
        phErrorNode,
        logBuffer,
        bufferSize,
    )
}

/// As [`cuGraphInstantiate`].
///
/// # Safety
/// As [`cuGraphInstantiate`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphInstantiate_v2(
    phGraphExec: *mut CUgraphExec,
    hGraph: CUgraph,
    phErrorNode: *mut CUgraphNode,
    logBuffer: *mut c_char,
    bufferSize: usize,
) -> CuResult {
    instantiate(
        shim_macros::cuda_call_id!(cuGraphInstantiate_v2),
        phGraphExec,
        hGraph,
        phErrorNode,
        logBuffer,
        bufferSize,
    )
}

/// Writes the graph as DOT to a guest path: the host renders the text, the guest writes it.
///
/// # Safety
/// `path` is a NUL-terminated string.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL path or one that cannot be written (one log line);
/// the host's result.
pub unsafe fn cuGraphDebugDotPrint(hGraph: CUgraph, path: *const c_char, flags: u32) -> CuResult {
    if path.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let path = unsafe { CStr::from_ptr(path) }
        .to_string_lossy()
        .into_owned();
    let text = call_with(
        shim_macros::cuda_call_id!(cuGraphDebugDotPrint),
        |enc| {
            enc.put(hGraph as u64);
            enc.put(flags);
        },
        |dec| Ok(dec.get_bytes().map_err(bad_response)?.to_vec()),
    )?;
    std::fs::write(&path, text).map_err(|e| {
        log!(
            Level::Warn,
            "cuGraphDebugDotPrint: cannot write {path}: {e}"
        );
        CuError::INVALID_VALUE
    })
}

/// Kernel-node and stream attributes share one value type: `u64 handle, u32 attr` (+ the
/// value for setters) → the 64-byte value.
pub(crate) fn get_attribute(
    id: u32,
    handle: u64,
    attr: u32,
    value: *mut CUlaunchAttributeValue,
) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
        },
        |dec| {
            // SAFETY: the host sends one CUlaunchAttributeValue (plain data: integers, device
            // addresses, handles).
            write(
                value,
                unsafe { dec.get_raw::<CUlaunchAttributeValue>() }.map_err(bad_response)?,
            );
            Ok(())
        },
    )
}

/// The setter of [`get_attribute`].
pub(crate) fn set_attribute(
    id: u32,
    handle: u64,
    attr: u32,
    value: *const CUlaunchAttributeValue,
) -> CuResult {
    // SAFETY: per the driver API contract, NULL or one value.
    let value = unsafe { value.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    call_with(
        id,
        |enc| {
            enc.put(handle);
            enc.put(attr);
            // SAFETY: plain data, as above.
            unsafe { enc.put_raw(value) };
        },
        |_| Ok(()),
    )
}

/// A kernel node's launch attribute.
///
/// # Safety
/// `value_out` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeGetAttribute(
    hNode: CUgraphNode,
    attr: CUkernelNodeAttrID,
    value_out: *mut CUkernelNodeAttrValue,
) -> CuResult {
    get_attribute(
        shim_macros::cuda_call_id!(cuGraphKernelNodeGetAttribute),
        hNode as u64,
        attr.0,
        value_out,
    )
}

/// Sets a kernel node's launch attribute.
///
/// # Safety
/// `value` is valid.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeSetAttribute(
    hNode: CUgraphNode,
    attr: CUkernelNodeAttrID,
    value: *const CUkernelNodeAttrValue,
) -> CuResult {
    set_attribute(
        shim_macros::cuda_call_id!(cuGraphKernelNodeSetAttribute),
        hNode as u64,
        attr.0,
        value,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_bodies_start_with_their_type() {
        let dec_body = |b: Body| {
            let mut dec = Decoder::new(&b.0);
            let kind: u32 = dec.get().unwrap();
            (kind, dec.remaining())
        };
        assert_eq!(dec_body(Body::empty()), (EMPTY, 0));
        assert_eq!(
            dec_body(Body::event(EVENT_RECORD, 0x1234usize as CUevent)),
            (EVENT_RECORD, 8)
        );
        extern "C" fn noop(_: *mut c_void) {}
        let host = Body::host(Some(noop), 7usize as *mut c_void).unwrap();
        let mut dec = Decoder::new(&host.0);
        assert_eq!(dec.get::<u32>().unwrap(), HOST);
        assert_eq!(dec.get::<u64>().unwrap(), noop as *const () as usize as u64);
        assert_eq!(dec.get::<u64>().unwrap(), 7);
        assert!(Body::host(None, std::ptr::null_mut()).is_err());
    }

    #[test]
    fn unsupported_generic_types_are_refused() {
        // SAFETY: an all-zero CUgraphNodeParams is valid plain data.
        let mut p: CUgraphNodeParams = unsafe { std::mem::zeroed() };
        p.type_ = CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC;
        // SAFETY: `p` is valid.
        let refused = unsafe { Body::generic(&p) }.err();
        assert_eq!(refused, Some(CuError::NOT_SUPPORTED));
        p.type_ = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: as above.
        assert_eq!(unsafe { Body::generic(&p) }.unwrap().0.len(), 4);
    }

    #[test]
    fn memcpy_nodes_refuse_guest_host_memory() {
        // SAFETY: an all-zero descriptor is valid plain data.
        let mut c: CUDA_MEMCPY3D = unsafe { std::mem::zeroed() };
        c.srcMemoryType = CUmemorytype::CU_MEMORYTYPE_HOST;
        c.dstMemoryType = CUmemorytype::CU_MEMORYTYPE_DEVICE;
        assert_eq!(
            Body::memcpy(&c, std::ptr::null_mut()).err(),
            Some(CuError::NOT_SUPPORTED)
        );
        c.srcMemoryType = CUmemorytype::CU_MEMORYTYPE_DEVICE;
        let body = Body::memcpy(&c, std::ptr::null_mut()).unwrap();
        assert_eq!(body.0.len(), 4 + 8 + std::mem::size_of::<CUDA_MEMCPY3D>());
    }
}
