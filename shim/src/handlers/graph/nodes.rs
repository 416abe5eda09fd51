//! Nodes added by hand (`cuGraphAdd*Node`, `cuGraphAddNode`) and their parameters set again
//! (`cuGraph[Exec]*NodeSetParams`): each sends one node body ([`super::Body`]).

#![allow(non_snake_case)]

use super::*;

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
