//! Graphs built by hand: node bodies, queries, edges, node parameters, instantiation, DOT.
//! Guest halves: `shim/src/handlers/graph.rs`.
//!
//! A **node body** is `u32 type` followed by:
//! - kernel (0): `u64 func, u64 kern, u64 ctx, 3 × u32 grid, 3 × u32 block, u32 shared,
//!   params` (params as for launches: `u8 form, bytes packed, u32 n, n × (u32 offset, u32 size)`);
//! - memcpy (1): `u64 ctx, CUDA_MEMCPY3D` (device, array or device-unified ends only);
//! - memset (2): `CUDA_MEMSET_NODE_PARAMS_v2`;
//! - host (3): `u64 fn, u64 data` (guest values; the host registers a persistent trampoline);
//! - empty (5): nothing;
//! - wait event (6), event record (7): `u64 event`.
//!
//! **Dependencies** (`deps`) are `u32 n, n × u64 node, u8 has_edges, [n × 8-byte edge]`.
//!
//! Every graph, node and executable graph the guest passes goes through the client's handle gate
//! (`gate.rs`; node arrays element by element), and every one the driver writes is minted there:
//! added nodes, queried node arrays and instantiation error nodes as nodes of the graph they
//! were found in, executable graphs on their own. `cuGraphExecUpdate(_v2)` and
//! `cuGraphInstantiateWithParams(_ptsz)` keep their generated wire formats here, for the nodes
//! and the stream inside their structs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::arrays::{checked, put_edge, Checked, Deps, MAX_ARRAY};
use super::launch::{packed_len, Layout, Params};
use super::memory::array_ends;
use super::{out_ptr, put_present, real_or_unsupported, respond};
use crate::dispatch::callbacks::{graph_host_fn_trampoline, persistent_ticket, ticket_target};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

const KERNEL: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL.0;
const MEMCPY: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY.0;
const MEMSET: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMSET.0;
const HOST: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_HOST.0;
const EMPTY: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY.0;
const WAIT_EVENT: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_WAIT_EVENT.0;
const EVENT_RECORD: u32 = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EVENT_RECORD.0;

/// A decoded node body.
enum Body {
    Kernel {
        func: CUfunction,
        kern: CUkernel,
        ctx: CUcontext,
        dims: [u32; 7],
        params: Params,
    },
    Memcpy {
        ctx: CUcontext,
        copy: CUDA_MEMCPY3D,
    },
    Memset(CUDA_MEMSET_NODE_PARAMS_v2),
    Host {
        func: u64,
        data: u64,
    },
    Empty,
    Event(u32, CUevent),
}

/// Whether a memcpy end is memory the device owns: host ends would name this worker's memory.
fn device_end(kind: CUmemorytype, addr: u64) -> bool {
    match kind {
        CUmemorytype::CU_MEMORYTYPE_DEVICE | CUmemorytype::CU_MEMORYTYPE_ARRAY => true,
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => super::memory::is_device_memory(addr),
        _ => false,
    }
}

impl Body {
    /// Decodes a body; its function, kernel or event must pass the client's gate.
    fn decode(dec: &mut Decoder<'_>, client: &ClientContext) -> Result<Checked<Self>, DecodeError> {
        let kind: u32 = dec.get()?;
        Ok(Ok(match kind {
            KERNEL => {
                let (func, kern, ctx): (u64, u64, u64) = (dec.get()?, dec.get()?, dec.get()?);
                let mut dims = [0u32; 7];
                for d in &mut dims {
                    *d = dec.get()?;
                }
                let (func, kern, ctx) = match (
                    client.handles.function(func),
                    client.handles.kernel(kern),
                    client.handles.context(ctx),
                ) {
                    (Ok(f), Ok(k), Ok(c)) => (f, k, c),
                    (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return Ok(Err(r)),
                };
                // The node's function, or its kernel when the function is NULL.
                let launched = if func.is_null() { kern.cast() } else { func };
                let params = match Params::decode(dec, launched, &client.layouts)? {
                    Ok(p) => p,
                    Err(r) => return Ok(Err(r)),
                };
                Body::Kernel {
                    func,
                    kern,
                    ctx,
                    dims,
                    params,
                }
            }
            MEMCPY => {
                let ctx: u64 = dec.get()?;
                // SAFETY: CUDA_MEMCPY3D is a plain C struct; its host pointers are cleared below
                // and host ends are refused.
                let mut copy: CUDA_MEMCPY3D = unsafe { dec.get_raw() }?;
                copy.srcHost = std::ptr::null();
                copy.dstHost = std::ptr::null_mut();
                copy.reserved0 = std::ptr::null_mut();
                copy.reserved1 = std::ptr::null_mut();
                if !device_end(copy.srcMemoryType, copy.srcDevice)
                    || !device_end(copy.dstMemoryType, copy.dstDevice)
                {
                    tracing::warn!("refusing a graph memcpy node with a host end");
                    return Ok(Err(CUresult::CUDA_ERROR_INVALID_VALUE));
                }
                let h = &client.handles;
                let checked = h.context(ctx).and_then(|ctx| {
                    array_ends(
                        h,
                        (copy.srcMemoryType, &mut copy.srcArray),
                        (copy.dstMemoryType, &mut copy.dstArray),
                    )?;
                    Ok(ctx)
                });
                match checked {
                    Ok(ctx) => Body::Memcpy { ctx, copy },
                    Err(r) => return Ok(Err(r)),
                }
            }
            MEMSET => {
                // SAFETY: a plain C struct of integers, a device address and a context, which
                // passes the gate before the driver sees it.
                let memset: CUDA_MEMSET_NODE_PARAMS_v2 = unsafe { dec.get_raw() }?;
                if let Err(r) = client.handles.admit(Kind::Context, memset.ctx as u64) {
                    return Ok(Err(r));
                }
                Body::Memset(memset)
            }
            HOST => Body::Host {
                func: dec.get()?,
                data: dec.get()?,
            },
            EMPTY => Body::Empty,
            WAIT_EVENT | EVENT_RECORD => match client.handles.event(dec.get()?) {
                Ok(event) => Body::Event(kind, event),
                Err(r) => return Ok(Err(r)),
            },
            other => {
                tracing::warn!(kind = other, "unsupported graph node type");
                return Ok(Err(CUresult::CUDA_ERROR_NOT_SUPPORTED));
            }
        }))
    }

    /// Kernel parameters for the driver; they point into `self`, which must outlive the call.
    fn kernel(&mut self) -> Option<CUDA_KERNEL_NODE_PARAMS> {
        let Body::Kernel {
            func,
            kern,
            ctx,
            dims,
            params,
        } = self
        else {
            return None;
        };
        Some(CUDA_KERNEL_NODE_PARAMS {
            func: *func,
            gridDimX: dims[0],
            gridDimY: dims[1],
            gridDimZ: dims[2],
            blockDimX: dims[3],
            blockDimY: dims[4],
            blockDimZ: dims[5],
            sharedMemBytes: dims[6],
            kernelParams: params.kernel_params(),
            extra: params.extra(),
            kern: *kern,
            ctx: *ctx,
        })
    }

    fn host(&self, client: &Arc<ClientContext>) -> Option<CUDA_HOST_NODE_PARAMS> {
        let Body::Host { func, data } = self else {
            return None;
        };
        Some(CUDA_HOST_NODE_PARAMS {
            fn_: Some(graph_host_fn_trampoline),
            userData: persistent_ticket(&client.callbacks, *func, *data),
        })
    }

    /// The generic form (`cuGraphAddNode`, `cuGraphNodeSetParams`).
    fn generic(&mut self, client: &Arc<ClientContext>) -> CUgraphNodeParams {
        // SAFETY: all-zero is a valid CUgraphNodeParams (reserved fields must be zero).
        let mut p: CUgraphNodeParams = unsafe { std::mem::zeroed() };
        let u = &mut p.__bindgen_anon_1;
        p.type_ = CUgraphNodeType(match self {
            Body::Kernel { .. } => {
                let k = self.kernel().expect("kernel body");
                u.kernel = CUDA_KERNEL_NODE_PARAMS_v3 {
                    func: k.func,
                    gridDimX: k.gridDimX,
                    gridDimY: k.gridDimY,
                    gridDimZ: k.gridDimZ,
                    blockDimX: k.blockDimX,
                    blockDimY: k.blockDimY,
                    blockDimZ: k.blockDimZ,
                    sharedMemBytes: k.sharedMemBytes,
                    kernelParams: k.kernelParams,
                    extra: k.extra,
                    kern: k.kern,
                    ctx: k.ctx,
                };
                KERNEL
            }
            Body::Memcpy { ctx, copy } => {
                u.memcpy = CUDA_MEMCPY_NODE_PARAMS {
                    flags: 0,
                    reserved: 0,
                    copyCtx: *ctx,
                    copyParams: *copy,
                };
                MEMCPY
            }
            Body::Memset(m) => {
                u.memset = *m;
                MEMSET
            }
            Body::Host { .. } => {
                let h = self.host(client).expect("host body");
                u.host = CUDA_HOST_NODE_PARAMS_v2 {
                    fn_: h.fn_,
                    userData: h.userData,
                };
                HOST
            }
            Body::Empty => EMPTY,
            Body::Event(kind, event) => {
                let event = *event;
                if *kind == WAIT_EVENT {
                    u.eventWait = CUDA_EVENT_WAIT_NODE_PARAMS { event };
                } else {
                    u.eventRecord = CUDA_EVENT_RECORD_NODE_PARAMS { event };
                }
                *kind
            }
        });
        p
    }
}

/// `cuGraphAdd*Node`, `cuGraphAddNode(_v2)`: `u64 graph, deps, body` → result, `u64 node`.
/// The body's type must match the function (`CUDA_ERROR_INVALID_VALUE` otherwise).
pub fn add_node(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let graph = admit!(client.handles.graph(owner), out);
    let deps = checked!(Deps::decode(dec, &client.handles)?, out);
    let mut body = checked!(Body::decode(dec, client)?, out);
    dec.finish()?;
    let mut node: CUgraphNode = std::ptr::null_mut();
    let (d, n) = (deps.nodes_ptr(), deps.len());
    let wrong = CUresult::CUDA_ERROR_INVALID_VALUE;
    // SAFETY: (all arms) every pointer passed points into `deps`/`body`/locals alive for the
    // call; the driver copies node parameters when it adds the node.
    let r = unsafe {
        match (name, &body) {
            ("cuGraphAddKernelNode_v2", Body::Kernel { .. }) => {
                let k = body.kernel().expect("kernel body");
                real_or_unsupported!(cuGraphAddKernelNode_v2, out)(&mut node, graph, d, n, &k)
            }
            ("cuGraphAddMemcpyNode", Body::Memcpy { ctx, copy }) => {
                real_or_unsupported!(cuGraphAddMemcpyNode, out)(&mut node, graph, d, n, copy, *ctx)
            }
            ("cuGraphAddMemsetNode", Body::Memset(m)) => {
                let v1 = CUDA_MEMSET_NODE_PARAMS {
                    dst: m.dst,
                    pitch: m.pitch,
                    value: m.value,
                    elementSize: m.elementSize,
                    width: m.width,
                    height: m.height,
                };
                real_or_unsupported!(cuGraphAddMemsetNode, out)(&mut node, graph, d, n, &v1, m.ctx)
            }
            ("cuGraphAddEmptyNode", Body::Empty) => {
                real_or_unsupported!(cuGraphAddEmptyNode, out)(&mut node, graph, d, n)
            }
            ("cuGraphAddEventRecordNode", Body::Event(EVENT_RECORD, e)) => {
                real_or_unsupported!(cuGraphAddEventRecordNode, out)(&mut node, graph, d, n, *e)
            }
            ("cuGraphAddEventWaitNode", Body::Event(WAIT_EVENT, e)) => {
                real_or_unsupported!(cuGraphAddEventWaitNode, out)(&mut node, graph, d, n, *e)
            }
            ("cuGraphAddHostNode", Body::Host { .. }) => {
                let h = body.host(client).expect("host body");
                real_or_unsupported!(cuGraphAddHostNode, out)(&mut node, graph, d, n, &h)
            }
            ("cuGraphAddNode", _) => {
                let mut p = body.generic(client);
                real_or_unsupported!(cuGraphAddNode, out)(&mut node, graph, d, n, &mut p)
            }
            ("cuGraphAddNode_v2", _) => {
                let mut p = body.generic(client);
                real_or_unsupported!(cuGraphAddNode_v2, out)(
                    &mut node,
                    graph,
                    d,
                    deps.edges_ptr(),
                    n,
                    &mut p,
                )
            }
            _ => wrong,
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::GraphNode, node as u64, owner);
    }
    ResponseHeader::start(out, r.0).put(node as u64);
    Ok(())
}

/// `cuGraph*NodeSetParams`, `cuGraphExec*NodeSetParams`, `cuGraph(Exec)NodeSetParams`:
/// `u64 exec (0 for graph nodes), u64 node, body` → result.
pub fn set_node(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let exec = admit!(client.handles.graph_exec(dec.get()?), out);
    let (node, _) = admit!(client.handles.graph_node(dec.get()?), out);
    let mut body = checked!(Body::decode(dec, client)?, out);
    dec.finish()?;
    // SAFETY: (all arms) parameters point into `body` or locals alive for the call; the driver
    // copies them.
    let r = unsafe {
        match (name, &body) {
            ("cuGraphKernelNodeSetParams_v2", Body::Kernel { .. }) => {
                let k = body.kernel().expect("kernel body");
                real_or_unsupported!(cuGraphKernelNodeSetParams_v2, out)(node, &k)
            }
            ("cuGraphExecKernelNodeSetParams_v2", Body::Kernel { .. }) => {
                let k = body.kernel().expect("kernel body");
                real_or_unsupported!(cuGraphExecKernelNodeSetParams_v2, out)(exec, node, &k)
            }
            ("cuGraphMemcpyNodeSetParams", Body::Memcpy { copy, .. }) => {
                real_or_unsupported!(cuGraphMemcpyNodeSetParams, out)(node, copy)
            }
            ("cuGraphExecMemcpyNodeSetParams", Body::Memcpy { ctx, copy }) => {
                real_or_unsupported!(cuGraphExecMemcpyNodeSetParams, out)(exec, node, copy, *ctx)
            }
            ("cuGraphHostNodeSetParams", Body::Host { .. }) => {
                let h = body.host(client).expect("host body");
                real_or_unsupported!(cuGraphHostNodeSetParams, out)(node, &h)
            }
            ("cuGraphExecHostNodeSetParams", Body::Host { .. }) => {
                let h = body.host(client).expect("host body");
                real_or_unsupported!(cuGraphExecHostNodeSetParams, out)(exec, node, &h)
            }
            ("cuGraphNodeSetParams", _) => {
                let mut p = body.generic(client);
                real_or_unsupported!(cuGraphNodeSetParams, out)(node, &mut p)
            }
            ("cuGraphExecNodeSetParams", _) => {
                let mut p = body.generic(client);
                real_or_unsupported!(cuGraphExecNodeSetParams, out)(exec, node, &mut p)
            }
            _ => CUresult::CUDA_ERROR_INVALID_VALUE,
        }
    };
    respond(out, r);
    Ok(())
}

/// `cuGraphKernelNodeGetParams_v2`: `u64 node` → result, `u64 func, u64 kern, u64 ctx,
/// 3 × u32 grid, 3 × u32 block, u32 shared, bytes packed, u32 n, n × (u32 offset, u32 size)`:
/// the parameter values copied out of the driver's storage at the kernel's layout.
pub fn kernel_get_params(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (node, _) = admit!(client.handles.graph_node(dec.get()?), out);
    dec.finish()?;
    // SAFETY: all-zero is a valid value for this plain struct of handles and integers.
    let mut p: CUDA_KERNEL_NODE_PARAMS = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a live local.
    let r = unsafe { real_or_unsupported!(cuGraphKernelNodeGetParams_v2, out)(node, &mut p) };
    if r != CUresult::CUDA_SUCCESS {
        respond(out, r);
        return Ok(());
    }
    // The driver's own handles: the client may pass them back.
    client.handles.mint(Kind::Function, p.func as u64, 0);
    client.handles.mint(Kind::Kernel, p.kern as u64, 0);
    client.handles.mint(Kind::Context, p.ctx as u64, 0);
    let handle: CUfunction = if p.func.is_null() {
        p.kern.cast()
    } else {
        p.func
    };
    let layout: Layout = if p.kernelParams.is_null() {
        Arc::new([])
    } else {
        checked!(client.layouts.of(handle), out)
    };
    let total = packed_len(&layout);
    let mut packed = vec![0u8; total];
    for (i, &(offset, size)) in layout.iter().enumerate() {
        // SAFETY: the driver's kernelParams has one pointer per parameter of the kernel, each to
        // `size` bytes; `offset + size <= total`.
        unsafe {
            let src = *p.kernelParams.add(i);
            if !src.is_null() {
                std::ptr::copy_nonoverlapping(
                    src.cast::<u8>(),
                    packed.as_mut_ptr().add(offset as usize),
                    size as usize,
                );
            }
        }
    }
    let mut enc = ResponseHeader::start(out, 0);
    enc.put(p.func as u64);
    enc.put(p.kern as u64);
    enc.put(p.ctx as u64);
    for v in [
        p.gridDimX,
        p.gridDimY,
        p.gridDimZ,
        p.blockDimX,
        p.blockDimY,
        p.blockDimZ,
        p.sharedMemBytes,
    ] {
        enc.put(v);
    }
    enc.put_bytes(&packed);
    enc.put(layout.len() as u32);
    for &(offset, size) in layout.iter() {
        enc.put(offset);
        enc.put(size);
    }
    Ok(())
}

/// `cuGraphMemcpyNodeGetParams`: `u64 node` → result, `CUDA_MEMCPY3D` (host pointers cleared).
pub fn memcpy_get_params(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (node, _) = admit!(client.handles.graph_node(dec.get()?), out);
    dec.finish()?;
    // SAFETY: all-zero is valid for this plain descriptor.
    let mut c: CUDA_MEMCPY3D = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a live local.
    let r = unsafe { real_or_unsupported!(cuGraphMemcpyNodeGetParams, out)(node, &mut c) };
    c.srcHost = std::ptr::null();
    c.dstHost = std::ptr::null_mut();
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        // SAFETY: plain C struct with its host pointers cleared.
        unsafe { enc.put_raw(&c) };
    }
    Ok(())
}

/// `cuGraphHostNodeGetParams`: `u64 node` → result, `u64 fn, u64 data` (the guest's values;
/// 0, 0 for a node not made through vgpu).
pub fn host_get_params(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (node, _) = admit!(client.handles.graph_node(dec.get()?), out);
    dec.finish()?;
    let mut p = CUDA_HOST_NODE_PARAMS {
        fn_: None,
        userData: std::ptr::null_mut(),
    };
    // SAFETY: `p` is a live local.
    let r = unsafe { real_or_unsupported!(cuGraphHostNodeGetParams, out)(node, &mut p) };
    let ours = p.fn_.map(|f| f as *const () as usize)
        == Some(graph_host_fn_trampoline as *const () as usize);
    let (func, data) = if ours && !p.userData.is_null() {
        // SAFETY: our trampoline's userData is always a persistent ticket of this process.
        unsafe { ticket_target(p.userData) }
    } else {
        (0, 0)
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        enc.put(func);
        enc.put(data);
    }
    Ok(())
}

/// Node-array queries (`cuGraphGetNodes`, `…RootNodes`, `…Edges(_v2)`,
/// `cuGraphNodeGetDependencies(_v2)`, `…DependentNodes(_v2)`): `u64 handle, u64 capacity,
/// u8 arrays` (bit 0 first, bit 1 second node array, bit 2 edge data) → result, `u64 count`,
/// then `capacity × u64` per node array asked for and `capacity × edge` for edge data. Every
/// node the driver wrote is minted as a node of the graph asked about (or of the node's graph).
pub fn query(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    let capacity: u64 = dec.get()?;
    let mask: u8 = dec.get()?;
    dec.finish()?;
    let (g, node, owner) = if name.starts_with("cuGraphNode") {
        let (node, graph) = admit!(client.handles.graph_node(handle), out);
        (std::ptr::null_mut(), node, graph)
    } else {
        let g = admit!(client.handles.graph(handle), out);
        (g, std::ptr::null_mut(), handle)
    };
    if capacity > MAX_ARRAY as u64 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let cap = capacity as usize;
    let mut first = vec![std::ptr::null_mut(); cap];
    let mut second = vec![std::ptr::null_mut(); cap];
    // SAFETY: all-zero edge data is valid.
    let mut edges: Vec<CUgraphEdgeData> = vec![unsafe { std::mem::zeroed() }; cap];
    let arr = |v: &mut Vec<CUgraphNode>, bit: u8| -> *mut CUgraphNode {
        if mask & bit != 0 {
            // With capacity 0 this is a dangling but non-NULL pointer the driver never writes.
            v.as_mut_ptr()
        } else {
            std::ptr::null_mut()
        }
    };
    let (f, s) = (arr(&mut first, 1), arr(&mut second, 2));
    let e = if mask & 4 != 0 {
        edges.as_mut_ptr()
    } else {
        std::ptr::null_mut()
    };
    let mut count = cap;
    // SAFETY: (all arms) arrays hold `cap` entries and `count` starts at `cap`.
    let r = unsafe {
        match name {
            "cuGraphGetNodes" => real_or_unsupported!(cuGraphGetNodes, out)(g, f, &mut count),
            "cuGraphGetRootNodes" => {
                real_or_unsupported!(cuGraphGetRootNodes, out)(g, f, &mut count)
            }
            "cuGraphGetEdges" => real_or_unsupported!(cuGraphGetEdges, out)(g, f, s, &mut count),
            "cuGraphGetEdges_v2" => {
                real_or_unsupported!(cuGraphGetEdges_v2, out)(g, f, s, e, &mut count)
            }
            "cuGraphNodeGetDependencies" => {
                real_or_unsupported!(cuGraphNodeGetDependencies, out)(node, f, &mut count)
            }
            "cuGraphNodeGetDependencies_v2" => {
                real_or_unsupported!(cuGraphNodeGetDependencies_v2, out)(node, f, e, &mut count)
            }
            "cuGraphNodeGetDependentNodes" => {
                real_or_unsupported!(cuGraphNodeGetDependentNodes, out)(node, f, &mut count)
            }
            _ => real_or_unsupported!(cuGraphNodeGetDependentNodes_v2, out)(node, f, e, &mut count),
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        for (bit, v) in [(1u8, &first), (2, &second)] {
            if mask & bit != 0 {
                let values: Vec<u64> = v.iter().map(|&n| n as u64).collect();
                client.handles.mint_all(Kind::GraphNode, &values, owner);
            }
        }
    }
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        enc.put(count as u64);
        for (bit, v) in [(1u8, &first), (2, &second)] {
            if mask & bit != 0 {
                for n in v {
                    enc.put(*n as u64);
                }
            }
        }
        if mask & 4 != 0 {
            for e in &edges {
                put_edge(&mut enc, e);
            }
        }
    }
    Ok(())
}

/// `cuGraphAddDependencies(_v2)`, `cuGraphRemoveDependencies(_v2)`: `u64 graph, u32 n,
/// n × u64 from, deps (the `to` nodes with optional edge data)` → result.
pub fn edges(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let graph = admit!(client.handles.graph(dec.get()?), out);
    let from = checked!(super::arrays::get_nodes(dec, &client.handles)?, out);
    let to = checked!(Deps::decode(dec, &client.handles)?, out);
    dec.finish()?;
    if from.len() != to.len() {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let f = if from.is_empty() {
        std::ptr::null()
    } else {
        from.as_ptr()
    };
    let (t, e, n) = (to.nodes_ptr(), to.edges_ptr(), to.len());
    // SAFETY: (all arms) the arrays hold `n` entries (edge data: `n` or NULL).
    let r = unsafe {
        match name {
            "cuGraphAddDependencies" => {
                real_or_unsupported!(cuGraphAddDependencies, out)(graph, f, t, n)
            }
            "cuGraphAddDependencies_v2" => {
                real_or_unsupported!(cuGraphAddDependencies_v2, out)(graph, f, t, e, n)
            }
            "cuGraphRemoveDependencies" => {
                real_or_unsupported!(cuGraphRemoveDependencies, out)(graph, f, t, n)
            }
            _ => real_or_unsupported!(cuGraphRemoveDependencies_v2, out)(graph, f, t, e, n),
        }
    };
    respond(out, r);
    Ok(())
}

/// The largest instantiation log the host keeps for a guest.
const MAX_LOG: u64 = 1 << 20;

/// `cuGraphInstantiate(_v2)`: `u64 graph, u64 log size, u8 want error node` → result, `u64
/// exec, u64 error node, bytes log` (sent on failure too: that is when they matter). The
/// executable graph is minted on success, the error node (a node of `graph`) whenever the
/// driver names one.
pub fn instantiate(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let graph = admit!(client.handles.graph(owner), out);
    let size = dec.get::<u64>()?.min(MAX_LOG) as usize;
    let want_node = dec.get_flag("error node")?;
    dec.finish()?;
    let mut exec: CUgraphExec = std::ptr::null_mut();
    let mut node: CUgraphNode = std::ptr::null_mut();
    let mut log = vec![0u8; size];
    let node_ptr: *mut CUgraphNode = if want_node {
        &mut node
    } else {
        std::ptr::null_mut()
    };
    let log_ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        log.as_mut_ptr().cast()
    };
    // SAFETY: out-pointers are live locals; the log buffer holds `size` bytes.
    let r = unsafe {
        if name == "cuGraphInstantiate_v2" {
            real_or_unsupported!(cuGraphInstantiate_v2, out)(
                &mut exec, graph, node_ptr, log_ptr, size,
            )
        } else {
            real_or_unsupported!(cuGraphInstantiate, out)(&mut exec, graph, node_ptr, log_ptr, size)
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::GraphExec, exec as u64, 0);
    }
    client.handles.mint(Kind::GraphNode, node as u64, owner);
    let used = log
        .iter()
        .position(|&b| b == 0)
        .map_or(size, |p| (p + 1).min(size));
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(exec as u64);
    enc.put(node as u64);
    enc.put_bytes(&log[..used]);
    Ok(())
}

static DOT_FILES: AtomicU64 = AtomicU64::new(0);

/// `cuGraphDebugDotPrint`: `u64 graph, u32 flags` → result, `bytes dot`. The driver writes a
/// private temporary file here, which is read back and removed; the guest writes its own path.
pub fn dot_print(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let graph = admit!(client.handles.graph(dec.get()?), out);
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let path = std::env::temp_dir().join(format!(
        "vgpu-graph-{}-{}.dot",
        std::process::id(),
        DOT_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let Ok(c_path) = std::ffi::CString::new(path.to_string_lossy().into_owned()) else {
        respond(out, CUresult::CUDA_ERROR_UNKNOWN);
        return Ok(());
    };
    // SAFETY: `c_path` is a NUL-terminated string alive for the call.
    let r =
        unsafe { real_or_unsupported!(cuGraphDebugDotPrint, out)(graph, c_path.as_ptr(), flags) };
    let text = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    match (r, text) {
        (CUresult::CUDA_SUCCESS, Ok(text)) => ResponseHeader::start(out, 0).put_bytes(&text),
        (CUresult::CUDA_SUCCESS, Err(e)) => {
            tracing::warn!(%e, "cannot read back the driver's DOT file");
            respond(out, CUresult::CUDA_ERROR_UNKNOWN);
        }
        (r, _) => respond(out, r),
    }
    Ok(())
}

/// `cuGraphExecUpdate`, `cuGraphExecUpdate_v2`, overriding the generated host half with its wire
/// format (`u64 exec, u64 graph`, then `inout CUgraphNode, inout CUgraphExecUpdateResult` or
/// `inout CUgraphExecUpdateResultInfo` → result, the out-values present). The error nodes are
/// written on failure, when the guest may ask about them: whatever node the driver names is
/// minted as a node of `graph`, on any result. The guest's values of the out-parameters never
/// reach the driver.
pub fn exec_update(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let exec = dec.get::<u64>()?;
    let owner = dec.get::<u64>()?;
    if name == "cuGraphExecUpdate" {
        // SAFETY: a node handle and an enum are plain data (the node is cleared before use).
        let (mut node, mut result) = unsafe {
            (
                dec.get_opt_raw::<CUgraphNode>()?,
                dec.get_opt_raw::<CUgraphExecUpdateResult>()?,
            )
        };
        dec.finish()?;
        let exec = admit!(client.handles.graph_exec(exec), out);
        let graph = admit!(client.handles.graph(owner), out);
        if let Some(n) = node.as_mut() {
            *n = std::ptr::null_mut();
        }
        let node_p = out_ptr(&mut node);
        let result_p = out_ptr(&mut result);
        // SAFETY: the out-pointers are NULL or live locals.
        let r =
            unsafe { real_or_unsupported!(cuGraphExecUpdate, out)(exec, graph, node_p, result_p) };
        if let Some(n) = node {
            client.handles.mint(Kind::GraphNode, n as u64, owner);
        }
        let mut enc = ResponseHeader::start(out, r.0);
        put_present(&mut enc, &node);
        put_present(&mut enc, &result);
    } else {
        // SAFETY: a plain struct of an enum and two node handles (cleared before use).
        let mut info = unsafe { dec.get_opt_raw::<CUgraphExecUpdateResultInfo>()? };
        dec.finish()?;
        let exec = admit!(client.handles.graph_exec(exec), out);
        let graph = admit!(client.handles.graph(owner), out);
        if let Some(i) = info.as_mut() {
            i.errorNode = std::ptr::null_mut();
            i.errorFromNode = std::ptr::null_mut();
        }
        let info_p = out_ptr(&mut info);
        // SAFETY: the out-pointer is NULL or a live local.
        let r = unsafe { real_or_unsupported!(cuGraphExecUpdate_v2, out)(exec, graph, info_p) };
        if let Some(i) = &info {
            let nodes = [i.errorNode as u64, i.errorFromNode as u64];
            client.handles.mint_all(Kind::GraphNode, &nodes, owner);
        }
        let mut enc = ResponseHeader::start(out, r.0);
        put_present(&mut enc, &info);
    }
    Ok(())
}

/// `cuGraphInstantiateWithParams(_ptsz)`, overriding the generated host half with its wire
/// format (`inout CUgraphExec, u64 graph, inout CUDA_GRAPH_INSTANTIATE_PARAMS` → result, the
/// out-values present). The upload stream inside the parameters passes the gate; the executable
/// graph is minted on success, the error node (a node of `graph`) whenever the driver names one.
pub fn instantiate_with_params(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: an executable-graph handle is plain data (cleared before use).
    let mut exec = unsafe { dec.get_opt_raw::<CUgraphExec>()? };
    let owner = dec.get::<u64>()?;
    // SAFETY: a plain struct of flags, two handles and an enum; the stream is admitted below and
    // the error node cleared.
    let mut params = unsafe { dec.get_opt_raw::<CUDA_GRAPH_INSTANTIATE_PARAMS>()? };
    dec.finish()?;
    let graph = admit!(client.handles.graph(owner), out);
    if let Some(p) = params.as_mut() {
        p.hUploadStream = admit!(client.handles.stream(p.hUploadStream as u64), out);
        p.hErrNode_out = std::ptr::null_mut();
    }
    if let Some(e) = exec.as_mut() {
        *e = std::ptr::null_mut();
    }
    let exec_p = out_ptr(&mut exec);
    let params_p = out_ptr(&mut params);
    // SAFETY: (both arms) the out-pointers are NULL or live locals.
    let r = unsafe {
        if name == "cuGraphInstantiateWithParams" {
            real_or_unsupported!(cuGraphInstantiateWithParams, out)(exec_p, graph, params_p)
        } else {
            real_or_unsupported!(cuGraphInstantiateWithParams_ptsz, out)(exec_p, graph, params_p)
        }
    };
    if let (CUresult::CUDA_SUCCESS, Some(e)) = (r, exec) {
        client.handles.mint(Kind::GraphExec, e as u64, 0);
    }
    if let Some(p) = &params {
        client
            .handles
            .mint(Kind::GraphNode, p.hErrNode_out as u64, owner);
    }
    let mut enc = ResponseHeader::start(out, r.0);
    put_present(&mut enc, &exec);
    put_present(&mut enc, &params);
    Ok(())
}
