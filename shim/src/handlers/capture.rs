//! Stream capture beyond the generated calls: capture info with the driver's dependency arrays,
//! dependency updates, capture into an existing graph, stream attributes, and
//! `cuStreamIsCapturing` answered in the guest while no capture is open. Host halves:
//! `host/src/dispatch/handlers/capture.rs`.
//!
//! PyTorch asks `cudaStreamIsCapturing` around allocations and copies, several times per step.
//! A stream can only be capturing inside a capture sequence that this process began, so while
//! every capture begun here has ended ([`OPEN_CAPTURES`] is zero) the answer is
//! `CU_STREAM_CAPTURE_STATUS_NONE` for every stream, with no round trip. While one is open,
//! streams may join it through events, so every query goes to the host. A begin counts from
//! before it is sent, an end only once it succeeded; a failed end keeps the count (the host is
//! asked from then on), which can only cost a round trip, never a wrong answer.
//!
//! `cuStreamGetCaptureInfo_v2/_v3` hand out pointers to arrays the driver owns. Here those
//! arrays are copies in guest storage, one per (thread, stream): they stay valid until the same
//! thread asks about the same stream again, or the thread exits. CUDA promises less (until the
//! next API call on the stream or the end of capture), so callers that follow CUDA's rule are
//! safe.
#![allow(non_snake_case)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cuda_headers::*;

use super::arrays::{get_edge, get_handles, put_deps, write};
use crate::forward::{bad_response, call_with, generated};

/// Capture sequences begun in this process and not (successfully) ended.
static OPEN_CAPTURES: AtomicU64 = AtomicU64::new(0);

/// Runs a capture begin, counted open from before it is sent (a query racing with it asks the
/// host) and uncounted again if it fails.
fn begin(send: impl FnOnce() -> CuResult) -> CuResult {
    // SYNC POINT: pairs with the Acquire load in `no_capture_open`: a query ordered after this
    // begin by the application's own synchronisation sees the capture open.
    OPEN_CAPTURES.fetch_add(1, Ordering::AcqRel);
    let result = send();
    if result.is_err() {
        close_one();
    }
    result
}

/// Runs a capture end; a successful one closes its sequence.
fn end(send: impl FnOnce() -> CuResult) -> CuResult {
    let result = send();
    if result.is_ok() {
        close_one();
    }
    result
}

fn close_one() {
    // SYNC POINT: pairs with the Acquire load in `no_capture_open`. Never below zero: an end
    // this process did not see begin (none should exist) must not hide a later begin.
    let _ = OPEN_CAPTURES.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// Whether no capture sequence is open in this process, so that no stream can be capturing.
pub(crate) fn no_capture_open() -> bool {
    // SYNC POINT: pairs with the AcqRel updates in `begin` and `close_one`.
    OPEN_CAPTURES.load(Ordering::Acquire) == 0
}

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
            begin(|| call_with(shim_macros::cuda_call_id!($name), |enc| enc.put_raw_bytes(&body), |_| Ok(())))
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
            super::graph::attributes::get_attribute(shim_macros::cuda_call_id!($get), hStream as u64, attr.0, value)
        }
        /// Sets a stream attribute.
        ///
        /// # Safety
        /// `param` is valid.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $set(hStream: CUstream, attr: CUstreamAttrID, param: *const CUstreamAttrValue) -> CuResult {
            super::graph::attributes::set_attribute(shim_macros::cuda_call_id!($set), hStream as u64, attr.0, param)
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

macro_rules! begin_fns {
    ($($name:ident($($p:ident: $t:ty),*)),*) => { $(
        /// Starts capturing (forwarded), counted as an open capture sequence.
        ///
        /// # Safety
        /// As the driver's.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name($($p: $t),*) -> CuResult {
            // SAFETY: values only, checked by the host.
            begin(|| unsafe { generated::$name($($p),*) })
        }
    )* };
}
begin_fns!(
    cuStreamBeginCapture(hStream: CUstream),
    cuStreamBeginCapture_ptsz(hStream: CUstream),
    cuStreamBeginCapture_v2(hStream: CUstream, mode: CUstreamCaptureMode),
    cuStreamBeginCapture_v2_ptsz(hStream: CUstream, mode: CUstreamCaptureMode)
);

macro_rules! end_fns {
    ($($name:ident),*) => { $(
        /// Ends a capture (forwarded); a successful end closes its sequence.
        ///
        /// # Safety
        /// `phGraph` is valid for one write (the host's marshalling checks NULL).
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(hStream: CUstream, phGraph: *mut CUgraph) -> CuResult {
            // SAFETY: per the contract.
            end(|| unsafe { generated::$name(hStream, phGraph) })
        }
    )* };
}
end_fns!(cuStreamEndCapture, cuStreamEndCapture_ptsz);

macro_rules! is_capturing_fns {
    ($($name:ident),*) => { $(
        /// A stream's capture status: `CU_STREAM_CAPTURE_STATUS_NONE` in the guest while no
        /// capture sequence is open in this process, else the host's answer.
        ///
        /// # Safety
        /// `captureStatus` is NULL or valid for one write.
        ///
        /// # Errors
        /// `CUDA_ERROR_INVALID_VALUE` for NULL; the host's result while a capture is open.
        pub unsafe fn $name(hStream: CUstream, captureStatus: *mut CUstreamCaptureStatus) -> CuResult {
            if captureStatus.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            if crate::channel::host_lost() {
                return Err(crate::channel::HOST_GONE);
            }
            if no_capture_open() {
                // SAFETY: checked non-NULL; valid per the contract.
                unsafe { captureStatus.write(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) };
                return Ok(());
            }
            // SAFETY: per the contract.
            unsafe { generated::$name(hStream, captureStatus) }
        }
    )* };
}
is_capturing_fns!(cuStreamIsCapturing, cuStreamIsCapturing_ptsz);

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
