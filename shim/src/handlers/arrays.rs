//! Packing shared by the handlers for graphs, capture, pools, attributes and VMM: caller arrays
//! read safely, handle arrays and graph edge data on the wire, out-pointer writes. The host's
//! counterpart is `host/src/dispatch/handlers/arrays.rs`.

use cuda_headers::*;
use protocol::{Decoder, Encoder};

use crate::forward::bad_response;

/// `n` entries at `ptr`: empty for `n == 0`, `CUDA_ERROR_INVALID_VALUE` for a NULL array.
///
/// # Safety
/// A non-NULL `ptr` holds `n` readable entries that outlive the borrow.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for `ptr == NULL` with `n > 0`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, n: usize) -> CuResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Writes `value` through a non-NULL out-pointer; NULL pointers are skipped.
pub(crate) fn write<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL out-pointers are valid for one write (driver API contract).
        unsafe { out.write(value) };
    }
}

/// `u32 n, n × u64`: handles (graph nodes, kernels, …) as opaque values.
pub(crate) fn put_handles<T>(enc: &mut Encoder<'_>, handles: &[*mut T]) {
    enc.put(handles.len() as u32);
    for h in handles {
        enc.put(*h as u64);
    }
}

/// Dependencies of a node or a capture: `u32 n, n × u64 node, u8 has_edges,
/// [n × CUgraphEdgeData]`.
///
/// # Safety
/// `nodes` holds `n` entries; a non-NULL `edges` holds `n` entries (driver API contract).
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL array with `n > 0`.
pub(crate) unsafe fn put_deps(
    enc: &mut Encoder<'_>,
    nodes: *const CUgraphNode,
    edges: *const CUgraphEdgeData,
    n: usize,
) -> CuResult {
    // SAFETY: per the contract.
    let nodes = unsafe { slice(nodes, n) }?;
    put_handles(enc, nodes);
    enc.put_flag(!edges.is_null() && n > 0);
    if !edges.is_null() && n > 0 {
        // SAFETY: per the contract, `n` entries.
        for e in unsafe { slice(edges, n) }? {
            enc.put(edge_bytes(e));
        }
    }
    Ok(())
}

/// The 8 bytes of one edge (ports, type, reserved), in field order.
pub(crate) fn edge_bytes(e: &CUgraphEdgeData) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = e.from_port;
    b[1] = e.to_port;
    b[2] = e.type_;
    b[3..].copy_from_slice(&e.reserved);
    b
}

/// Reads one edge written by [`edge_bytes`].
pub(crate) fn get_edge(dec: &mut Decoder<'_>) -> CuResult<CUgraphEdgeData> {
    let b: [u8; 8] = dec.get().map_err(bad_response)?;
    let mut reserved = [0u8; 5];
    reserved.copy_from_slice(&b[3..]);
    Ok(CUgraphEdgeData {
        from_port: b[0],
        to_port: b[1],
        type_: b[2],
        reserved,
    })
}

/// Reads `n` handles, each a `u64`.
pub(crate) fn get_handles<T>(dec: &mut Decoder<'_>, n: usize) -> CuResult<Vec<*mut T>> {
    (0..n)
        .map(|_| Ok(dec.get::<u64>().map_err(bad_response)? as usize as *mut T))
        .collect()
}

/// Copies `values` into the caller's array of at least `values.len()` entries.
///
/// # Safety
/// A non-NULL `out` is writable for `values.len()` entries.
pub(crate) unsafe fn write_all<T: Copy>(out: *mut T, values: &[T]) {
    if !out.is_null() && !values.is_empty() {
        // SAFETY: per the contract; `values` is our own buffer, so they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_round_trip_with_and_without_edges() {
        let nodes = [0x10usize as CUgraphNode, 0x20usize as CUgraphNode];
        let edges = [
            CUgraphEdgeData {
                from_port: 1,
                to_port: 0,
                type_: 1,
                reserved: [0; 5],
            },
            CUgraphEdgeData {
                from_port: 2,
                to_port: 0,
                type_: 0,
                reserved: [0; 5],
            },
        ];
        let mut buf = Vec::new();
        // SAFETY: both arrays hold two entries.
        unsafe {
            put_deps(
                &mut Encoder::new(&mut buf),
                nodes.as_ptr(),
                edges.as_ptr(),
                2,
            )
        }
        .unwrap();
        let mut dec = Decoder::new(&buf);
        assert_eq!(dec.get::<u32>().unwrap(), 2);
        let back: Vec<CUgraphNode> = get_handles(&mut dec, 2).unwrap();
        assert_eq!(back, nodes);
        assert!(dec.get_flag("edges").unwrap());
        let e0 = get_edge(&mut dec).unwrap();
        let e1 = get_edge(&mut dec).unwrap();
        assert_eq!((e0.from_port, e0.type_, e1.from_port), (1, 1, 2));
        dec.finish().unwrap();

        let mut buf = Vec::new();
        // SAFETY: `nodes` holds two entries; no edges.
        unsafe {
            put_deps(
                &mut Encoder::new(&mut buf),
                nodes.as_ptr(),
                std::ptr::null(),
                2,
            )
        }
        .unwrap();
        let mut dec = Decoder::new(&buf);
        assert_eq!(dec.get::<u32>().unwrap(), 2);
        let _: Vec<CUgraphNode> = get_handles(&mut dec, 2).unwrap();
        assert!(!dec.get_flag("edges").unwrap());
        dec.finish().unwrap();
    }

    #[test]
    fn null_array_with_a_count_is_refused() {
        let mut buf = Vec::new();
        // SAFETY: a NULL array is what is being tested; it is never read.
        let r = unsafe {
            put_deps(
                &mut Encoder::new(&mut buf),
                std::ptr::null(),
                std::ptr::null(),
                3,
            )
        };
        assert_eq!(r, Err(CuError::INVALID_VALUE));
        // SAFETY: n == 0 never reads.
        assert!(unsafe { slice::<u8>(std::ptr::null(), 0) }
            .unwrap()
            .is_empty());
    }
}
