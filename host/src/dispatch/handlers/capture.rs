//! Stream capture (capture info, dependency updates, capture into a graph) and launch-attribute
//! values of streams and kernel nodes. Guest halves: `shim/src/handlers/capture.rs` and
//! `graph.rs`.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::arrays::{checked, put_edge, Deps};
use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

/// `cuStreamGetCaptureInfo_v2/_v3(_ptsz)`: `u64 stream, u8 mask` (bit 0 id, 1 graph,
/// 2 dependencies, 3 edge data, 4 count: which out-pointers the guest gave) → result,
/// `u32 status, u64 id, u64 graph, u64 n, u8 has_nodes, [n × u64 node], u8 has_edges,
/// [n × edge]`. The arrays are copied out of the driver's storage here. The capture's graph is
/// always asked for (and sent only when the guest asked): it is minted, and the dependency nodes
/// sent to the guest are minted as its nodes.
pub fn capture_info(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let mask: u8 = dec.get()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let mut status = CUstreamCaptureStatus(0);
    let mut id: cuuint64_t = 0;
    let mut graph: CUgraph = std::ptr::null_mut();
    let mut deps: *const CUgraphNode = std::ptr::null();
    let mut edges: *const CUgraphEdgeData = std::ptr::null();
    let mut n: usize = 0;
    fn pick<T>(mask: u8, bit: u8, p: &mut T) -> *mut T {
        if mask & (1 << bit) != 0 {
            p
        } else {
            std::ptr::null_mut()
        }
    }
    let (id_p, graph_p, deps_p, edges_p, n_p) = (
        pick(mask, 0, &mut id),
        std::ptr::from_mut(&mut graph),
        pick(mask, 2, &mut deps),
        pick(mask, 3, &mut edges),
        pick(mask, 4, &mut n),
    );
    // SAFETY: (all arms) out-pointers are NULL or live locals.
    let r = unsafe {
        match name {
            "cuStreamGetCaptureInfo_v2" => real_or_unsupported!(cuStreamGetCaptureInfo_v2, out)(
                stream,
                &mut status,
                id_p,
                graph_p,
                deps_p,
                n_p,
            ),
            "cuStreamGetCaptureInfo_v2_ptsz" => real_or_unsupported!(
                cuStreamGetCaptureInfo_v2_ptsz,
                out
            )(
                stream, &mut status, id_p, graph_p, deps_p, n_p
            ),
            "cuStreamGetCaptureInfo_v3" => real_or_unsupported!(cuStreamGetCaptureInfo_v3, out)(
                stream,
                &mut status,
                id_p,
                graph_p,
                deps_p,
                edges_p,
                n_p,
            ),
            _ => real_or_unsupported!(cuStreamGetCaptureInfo_v3_ptsz, out)(
                stream,
                &mut status,
                id_p,
                graph_p,
                deps_p,
                edges_p,
                n_p,
            ),
        }
    };
    if r != CUresult::CUDA_SUCCESS {
        respond(out, r);
        return Ok(());
    }
    // The arrays only mean something with their count.
    let n = if mask & (1 << 4) != 0 { n } else { 0 };
    let nodes: Vec<u64> = if deps.is_null() {
        Vec::new()
    } else {
        // SAFETY: the driver's array holds `n` nodes, valid until the next call on the stream.
        (0..n).map(|i| unsafe { *deps.add(i) } as u64).collect()
    };
    client.handles.mint(Kind::Graph, graph as u64, 0);
    client
        .handles
        .mint_all(Kind::GraphNode, &nodes, graph as u64);
    let mut enc = ResponseHeader::start(out, 0);
    enc.put(status.0);
    enc.put(id);
    enc.put(if mask & (1 << 1) != 0 {
        graph as u64
    } else {
        0
    });
    enc.put(n as u64);
    enc.put_flag(!deps.is_null());
    for node in nodes {
        enc.put(node);
    }
    enc.put_flag(!edges.is_null());
    if !edges.is_null() {
        for i in 0..n {
            // SAFETY: as above, `n` edges.
            put_edge(&mut enc, unsafe { &*edges.add(i) });
        }
    }
    Ok(())
}

/// `cuStreamUpdateCaptureDependencies(_v2)(_ptsz)`: `u64 stream, deps, u32 flags` → result.
pub fn update_dependencies(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let mut deps = checked!(Deps::decode(dec, &client.handles)?, out);
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let (e, n) = (deps.edges_ptr(), deps.len());
    let d = deps.nodes_mut_ptr();
    // SAFETY: (all arms) the arrays hold `n` entries (edge data: `n` or NULL); the driver
    // only reads them.
    let r = unsafe {
        match name {
            "cuStreamUpdateCaptureDependencies" => {
                real_or_unsupported!(cuStreamUpdateCaptureDependencies, out)(stream, d, n, flags)
            }
            "cuStreamUpdateCaptureDependencies_ptsz" => real_or_unsupported!(
                cuStreamUpdateCaptureDependencies_ptsz,
                out
            )(stream, d, n, flags),
            "cuStreamUpdateCaptureDependencies_v2" => real_or_unsupported!(
                cuStreamUpdateCaptureDependencies_v2,
                out
            )(stream, d, e, n, flags),
            _ => real_or_unsupported!(cuStreamUpdateCaptureDependencies_v2_ptsz, out)(
                stream, d, e, n, flags,
            ),
        }
    };
    respond(out, r);
    Ok(())
}

/// `cuStreamBeginCaptureToGraph(_ptsz)`: `u64 stream, u64 graph, deps, u32 mode` → result.
pub fn begin_capture_to_graph(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let graph = admit!(client.handles.graph(dec.get()?), out);
    let deps = checked!(Deps::decode(dec, &client.handles)?, out);
    let mode = CUstreamCaptureMode(dec.get()?);
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let (d, e, n) = (deps.nodes_ptr(), deps.edges_ptr(), deps.len());
    // SAFETY: the arrays hold `n` entries (edge data: `n` or NULL).
    let r = unsafe {
        if name.ends_with("_ptsz") {
            real_or_unsupported!(cuStreamBeginCaptureToGraph_ptsz, out)(
                stream, graph, d, e, n, mode,
            )
        } else {
            real_or_unsupported!(cuStreamBeginCaptureToGraph, out)(stream, graph, d, e, n, mode)
        }
    };
    respond(out, r);
    Ok(())
}

/// `cuStreamGetAttribute(_ptsz)`, `cuGraphKernelNodeGetAttribute`: `u64 handle, u32 attr` →
/// result, `CUlaunchAttributeValue` (64 bytes).
pub fn get_attribute(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    let attr: u32 = dec.get()?;
    dec.finish()?;
    // SAFETY: all-zero is a valid value of the union.
    let mut value: CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
    let (s, node) = if name.starts_with("cuStream") {
        (
            admit!(client.handles.stream(handle), out),
            std::ptr::null_mut(),
        )
    } else {
        (
            std::ptr::null_mut(),
            admit!(client.handles.graph_node(handle), out).0,
        )
    };
    // SAFETY: (all arms) `value` is a live local of the attribute value type.
    let r = unsafe {
        match name {
            "cuStreamGetAttribute" => {
                real_or_unsupported!(cuStreamGetAttribute, out)(s, CUstreamAttrID(attr), &mut value)
            }
            "cuStreamGetAttribute_ptsz" => real_or_unsupported!(cuStreamGetAttribute_ptsz, out)(
                s,
                CUstreamAttrID(attr),
                &mut value,
            ),
            _ => real_or_unsupported!(cuGraphKernelNodeGetAttribute, out)(
                node,
                CUkernelNodeAttrID(attr),
                &mut value,
            ),
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        // SAFETY: plain data (integers, device addresses, handles).
        unsafe { enc.put_raw(&value) };
    }
    Ok(())
}

/// `cuStreamSetAttribute(_ptsz)`, `cuGraphKernelNodeSetAttribute`: `u64 handle, u32 attr,
/// CUlaunchAttributeValue` → result.
pub fn set_attribute(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    let attr: u32 = dec.get()?;
    // SAFETY: every bit pattern is a valid value of this union of plain data.
    let value: CUlaunchAttributeValue = unsafe { dec.get_raw() }?;
    dec.finish()?;
    let (s, node) = if name.starts_with("cuStream") {
        (
            admit!(client.handles.stream(handle), out),
            std::ptr::null_mut(),
        )
    } else {
        (
            std::ptr::null_mut(),
            admit!(client.handles.graph_node(handle), out).0,
        )
    };
    // SAFETY: (all arms) `value` is a live local.
    let r = unsafe {
        match name {
            "cuStreamSetAttribute" => {
                real_or_unsupported!(cuStreamSetAttribute, out)(s, CUstreamAttrID(attr), &value)
            }
            "cuStreamSetAttribute_ptsz" => real_or_unsupported!(cuStreamSetAttribute_ptsz, out)(
                s,
                CUstreamAttrID(attr),
                &value,
            ),
            _ => real_or_unsupported!(cuGraphKernelNodeSetAttribute, out)(
                node,
                CUkernelNodeAttrID(attr),
                &value,
            ),
        }
    };
    respond(out, r);
    Ok(())
}
