//! Stream capture beyond the generated calls: capture info with the driver's dependency arrays,
//! dependency updates, capture into an existing graph, and stream attributes. Host halves:
//! `host/src/dispatch/handlers/capture.rs`.
//!
//! `cuStreamGetCaptureInfo_v2/_v3` hand out pointers to arrays the driver owns. Here those
//! arrays are copies in guest storage, one per (thread, stream): they stay valid until the same
//! thread asks about the same stream again, or the thread exits. CUDA promises less (until the
//! next API call on the stream or the end of capture), so callers that follow CUDA's rule are
//! safe.
#![allow(non_snake_case)]

use std::cell::RefCell;
use std::collections::HashMap;

use cuda_headers::*;

use super::arrays::{get_edge, get_handles, put_deps, write};
use crate::forward::{bad_response, call_with};

/// What the last capture-info query of each stream returned on this thread.
type Arrays = (Vec<CUgraphNode>, Vec<CUgraphEdgeData>);

thread_local! {
    static CAPTURE_ARRAYS: RefCell<HashMap<u64, Arrays>> = RefCell::new(HashMap::new());
}

/// Which out-pointers the caller gave (bit 0 id, 1 graph, 2 dependencies, 3 edge data, 4 count).
fn mask(bits: [bool; 5]) -> u8 {
    bits.iter()
        .enumerate()
        .fold(0u8, |m, (i, &b)| m | (u8::from(b) << i))
}

#[allow(clippy::too_many_arguments)]
fn capture_info(
    id: u32,
    stream: CUstream,
    status: *mut CUstreamCaptureStatus,
    id_out: *mut cuuint64_t,
    graph: *mut CUgraph,
    deps: *mut *const CUgraphNode,
    edges: *mut *const CUgraphEdgeData,
    count: *mut usize,
) -> CuResult {
    let m = mask([
        !id_out.is_null(),
        !graph.is_null(),
        !deps.is_null(),
        !edges.is_null(),
        !count.is_null(),
    ]);
    call_with(
        id,
        |enc| {
            enc.put(stream as u64);
            enc.put(m);
        },
        |dec| {
            let st: u32 = dec.get().map_err(bad_response)?;
            let capture_id: u64 = dec.get().map_err(bad_response)?;
            let g: u64 = dec.get().map_err(bad_response)?;
            let n = dec.get::<u64>().map_err(bad_response)? as usize;
            let nodes = if dec.get_flag("dependencies").map_err(bad_response)? {
                Some(get_handles::<CUgraphNode_st>(dec, n)?)
            } else {
                None
            };
            let data = if dec.get_flag("edge data").map_err(bad_response)? {
                Some(
                    (0..n)
                        .map(|_| get_edge(dec))
                        .collect::<CuResult<Vec<_>>>()?,
                )
            } else {
                None
            };
            write(status, CUstreamCaptureStatus(st));
            write(id_out, capture_id);
            write(graph, g as usize as CUgraph);
            write(count, n);
            CAPTURE_ARRAYS.with(|arrays| {
                let mut arrays = arrays.borrow_mut();
                let slot = arrays.entry(stream as u64).or_default();
                slot.0 = nodes.clone().unwrap_or_default();
                slot.1 = data.clone().unwrap_or_default();
                // The vectors stay in the map (and their buffers in place) until the next query.
                let node_ptr = if nodes.is_some() && n > 0 {
                    slot.0.as_ptr()
                } else {
                    std::ptr::null()
                };
                let edge_ptr = if data.is_some() && n > 0 {
                    slot.1.as_ptr()
                } else {
                    std::ptr::null()
                };
                write(deps, node_ptr);
                write(edges, edge_ptr);
            });
            Ok(())
        },
    )
}

/// Capture state of a stream, with copies of the driver's dependency array.
///
/// # Safety
/// Out-pointers are NULL or valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuStreamGetCaptureInfo_v2(
    hStream: CUstream,
    captureStatus_out: *mut CUstreamCaptureStatus,
    id_out: *mut cuuint64_t,
    graph_out: *mut CUgraph,
    dependencies_out: *mut *const CUgraphNode,
    numDependencies_out: *mut usize,
) -> CuResult {
    capture_info(
        shim_macros::cuda_call_id!(cuStreamGetCaptureInfo_v2),
        hStream,
        captureStatus_out,
        id_out,
        graph_out,
        dependencies_out,
        std::ptr::null_mut(),
        numDependencies_out,
    )
}

/// As [`cuStreamGetCaptureInfo_v2`], per-thread default stream.
///
/// # Safety
/// As [`cuStreamGetCaptureInfo_v2`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuStreamGetCaptureInfo_v2_ptsz(
    hStream: CUstream,
    captureStatus_out: *mut CUstreamCaptureStatus,
    id_out: *mut cuuint64_t,
    graph_out: *mut CUgraph,
    dependencies_out: *mut *const CUgraphNode,
    numDependencies_out: *mut usize,
) -> CuResult {
    capture_info(
        shim_macros::cuda_call_id!(cuStreamGetCaptureInfo_v2_ptsz),
        hStream,
        captureStatus_out,
        id_out,
        graph_out,
        dependencies_out,
        std::ptr::null_mut(),
        numDependencies_out,
    )
}

/// As [`cuStreamGetCaptureInfo_v2`], with edge data.
///
/// # Safety
/// As [`cuStreamGetCaptureInfo_v2`].
///
/// # Errors
/// The host's result (`CUDA_ERROR_LOSSY_QUERY` when edge data exists but was not asked for).
pub unsafe fn cuStreamGetCaptureInfo_v3(
    hStream: CUstream,
    captureStatus_out: *mut CUstreamCaptureStatus,
    id_out: *mut cuuint64_t,
    graph_out: *mut CUgraph,
    dependencies_out: *mut *const CUgraphNode,
    edgeData_out: *mut *const CUgraphEdgeData,
    numDependencies_out: *mut usize,
) -> CuResult {
    capture_info(
        shim_macros::cuda_call_id!(cuStreamGetCaptureInfo_v3),
        hStream,
        captureStatus_out,
        id_out,
        graph_out,
        dependencies_out,
        edgeData_out,
        numDependencies_out,
    )
}

/// As [`cuStreamGetCaptureInfo_v3`], per-thread default stream.
///
/// # Safety
/// As [`cuStreamGetCaptureInfo_v2`].
///
/// # Errors
/// As [`cuStreamGetCaptureInfo_v3`].
pub unsafe fn cuStreamGetCaptureInfo_v3_ptsz(
    hStream: CUstream,
    captureStatus_out: *mut CUstreamCaptureStatus,
    id_out: *mut cuuint64_t,
    graph_out: *mut CUgraph,
    dependencies_out: *mut *const CUgraphNode,
    edgeData_out: *mut *const CUgraphEdgeData,
    numDependencies_out: *mut usize,
) -> CuResult {
    capture_info(
        shim_macros::cuda_call_id!(cuStreamGetCaptureInfo_v3_ptsz),
        hStream,
        captureStatus_out,
        id_out,
        graph_out,
        dependencies_out,
        edgeData_out,
        numDependencies_out,
    )
}

/// `u64 stream, deps, u32 flags`.
///
/// # Safety
/// Arrays hold `n` entries.
unsafe fn update(
    id: u32,
    stream: CUstream,
    deps: *const CUgraphNode,
    data: *const CUgraphEdgeData,
    n: usize,
    flags: u32,
) -> CuResult {
    let mut body = Vec::new();
    let mut enc = protocol::Encoder::new(&mut body);
    enc.put(stream as u64);
    // SAFETY: per the contract.
    unsafe { put_deps(&mut enc, deps, data, n) }?;
    enc.put(flags);
    call_with(id, |enc| enc.put_raw_bytes(&body), |_| Ok(()))
}

macro_rules! update_fns {
    ($($name:ident),*) => { $(
        /// Replaces or extends the capture's dependency set.
        ///
        /// # Safety
        /// `dependencies` holds `numDependencies` entries.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(hStream: CUstream, dependencies: *mut CUgraphNode, numDependencies: usize, flags: u32) -> CuResult {
            // SAFETY: per the contract.
            unsafe { update(shim_macros::cuda_call_id!($name), hStream, dependencies, std::ptr::null(), numDependencies, flags) }
        }
    )* };
}
macro_rules! update_v2_fns {
    ($($name:ident),*) => { $(
        /// Replaces or extends the capture's dependency set, with edge data.
        ///
        /// # Safety
        /// Arrays hold `numDependencies` entries (`dependencyData` may be NULL).
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(hStream: CUstream, dependencies: *mut CUgraphNode, dependencyData: *const CUgraphEdgeData, numDependencies: usize, flags: u32) -> CuResult {
            // SAFETY: per the contract.
            unsafe { update(shim_macros::cuda_call_id!($name), hStream, dependencies, dependencyData, numDependencies, flags) }
        }
    )* };
}
macro_rules! begin_to_graph_fns {
    ($($name:ident),*) => { $(
        /// Starts capturing into an existing graph after the given nodes.
        ///
        /// # Safety
        /// Arrays hold `numDependencies` entries (`dependencyData` may be NULL).
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(hStream: CUstream, hGraph: CUgraph, dependencies: *const CUgraphNode, dependencyData: *const CUgraphEdgeData, numDependencies: usize, mode: CUstreamCaptureMode) -> CuResult {
            let mut body = Vec::new();
            let mut enc = protocol::Encoder::new(&mut body);
            enc.put(hStream as u64);
            enc.put(hGraph as u64);
            // SAFETY: per the contract.
            unsafe { put_deps(&mut enc, dependencies, dependencyData, numDependencies) }?;
            enc.put(mode.0);
            call_with(shim_macros::cuda_call_id!($name), |enc| enc.put_raw_bytes(&body), |_| Ok(()))
        }
    )* };
}
macro_rules! stream_attr_fns {
    ($($get:ident, $set:ident);*) => { $(
        /// A stream attribute (`CUstreamAttrValue`).
        ///
        /// # Safety
        /// `value` is valid for one write.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $get(hStream: CUstream, attr: CUstreamAttrID, value: *mut CUstreamAttrValue) -> CuResult {
            super::graph::get_attribute(shim_macros::cuda_call_id!($get), hStream as u64, attr.0, value)
        }
        /// Sets a stream attribute.
        ///
        /// # Safety
        /// `param` is valid.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $set(hStream: CUstream, attr: CUstreamAttrID, param: *const CUstreamAttrValue) -> CuResult {
            super::graph::set_attribute(shim_macros::cuda_call_id!($set), hStream as u64, attr.0, param)
        }
    )* };
}
update_fns!(
    cuStreamUpdateCaptureDependencies,
    cuStreamUpdateCaptureDependencies_ptsz
);
update_v2_fns!(
    cuStreamUpdateCaptureDependencies_v2,
    cuStreamUpdateCaptureDependencies_v2_ptsz
);
begin_to_graph_fns!(
    cuStreamBeginCaptureToGraph,
    cuStreamBeginCaptureToGraph_ptsz
);
stream_attr_fns!(cuStreamGetAttribute, cuStreamSetAttribute; cuStreamGetAttribute_ptsz, cuStreamSetAttribute_ptsz);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_pointer_mask_bits() {
        assert_eq!(mask([false; 5]), 0);
        assert_eq!(mask([true, false, true, false, true]), 0b10101);
        assert_eq!(mask([true; 5]), 0b11111);
    }
}
