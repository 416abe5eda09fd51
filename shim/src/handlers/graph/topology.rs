//! Nodes, edges and dependencies: the queries that fill caller arrays, and the edge updates.

#![allow(non_snake_case)]

use super::*;

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
    super::super::arrays::put_handles(&mut enc, unsafe { super::super::arrays::slice(from, n) }?);
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
