//! Decoding shared by the graph, capture, pool, attribute and VMM handlers: handle arrays and
//! graph edge data, bounded. Node arrays pass the client's handle gate, every element. The
//! guest's counterpart is `shim/src/handlers/arrays.rs`.

use cuda_headers::*;
use protocol::{DecodeError, Decoder, Encoder};

use crate::dispatch::gate::Handles;

/// The most entries a guest may send or ask for in one array.
pub const MAX_ARRAY: usize = 1 << 20;

/// A decoded value, or the result to answer the guest with instead.
pub type Checked<T> = Result<T, CUresult>;

/// Unwraps a [`Checked`] value or answers the guest with its result and returns.
macro_rules! checked {
    ($e:expr, $out:ident) => {
        match $e {
            Ok(v) => v,
            Err(r) => {
                super::respond($out, r);
                return Ok(());
            }
        }
    };
}
pub(crate) use checked;

/// `u32 n, n × u64` graph nodes, at most [`MAX_ARRAY`] entries, each admitted by the gate.
///
/// # Errors
/// Truncation; an oversized count is answered `CUDA_ERROR_INVALID_VALUE`, a node this client
/// was not given `CUDA_ERROR_INVALID_HANDLE`.
pub fn get_nodes(
    dec: &mut Decoder<'_>,
    handles: &Handles,
) -> Result<Checked<Vec<CUgraphNode>>, DecodeError> {
    let n = dec.get::<u32>()? as usize;
    if n > MAX_ARRAY {
        return Ok(Err(CUresult::CUDA_ERROR_INVALID_VALUE));
    }
    let values = (0..n)
        .map(|_| dec.get::<u64>())
        .collect::<Result<Vec<u64>, DecodeError>>()?;
    Ok(handles.graph_nodes(&values))
}

/// One edge as the guest sends it (8 bytes in field order).
///
/// # Errors
/// Truncation.
pub fn get_edge(dec: &mut Decoder<'_>) -> Result<CUgraphEdgeData, DecodeError> {
    let b: [u8; 8] = dec.get()?;
    let mut reserved = [0u8; 5];
    reserved.copy_from_slice(&b[3..]);
    Ok(CUgraphEdgeData {
        from_port: b[0],
        to_port: b[1],
        type_: b[2],
        reserved,
    })
}

/// Writes one edge.
pub fn put_edge(enc: &mut Encoder<'_>, e: &CUgraphEdgeData) {
    let mut b = [0u8; 8];
    b[0] = e.from_port;
    b[1] = e.to_port;
    b[2] = e.type_;
    b[3..].copy_from_slice(&e.reserved);
    enc.put(b);
}

/// Dependencies: `u32 n, n × u64 node, u8 has_edges, [n × edge]`.
pub struct Deps {
    /// The nodes.
    pub nodes: Vec<CUgraphNode>,
    /// Edge data, one per node, when the guest gave any.
    pub edges: Option<Vec<CUgraphEdgeData>>,
}

impl Deps {
    /// Decodes dependencies; every node must pass the client's gate.
    ///
    /// # Errors
    /// Truncation or a bad flag; an oversized count is answered `CUDA_ERROR_INVALID_VALUE`, a
    /// node this client was not given `CUDA_ERROR_INVALID_HANDLE`.
    pub fn decode(dec: &mut Decoder<'_>, handles: &Handles) -> Result<Checked<Self>, DecodeError> {
        let nodes = match get_nodes(dec, handles)? {
            Ok(n) => n,
            Err(r) => return Ok(Err(r)),
        };
        let edges = if dec.get_flag("edge data")? {
            Some(
                (0..nodes.len())
                    .map(|_| get_edge(dec))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        Ok(Ok(Self { nodes, edges }))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The node array, NULL when empty.
    pub fn nodes_ptr(&self) -> *const CUgraphNode {
        if self.nodes.is_empty() {
            std::ptr::null()
        } else {
            self.nodes.as_ptr()
        }
    }

    /// The node array for functions that take it mutably (they do not write it).
    pub fn nodes_mut_ptr(&mut self) -> *mut CUgraphNode {
        if self.nodes.is_empty() {
            std::ptr::null_mut()
        } else {
            self.nodes.as_mut_ptr()
        }
    }

    /// The edge data, NULL when absent.
    pub fn edges_ptr(&self) -> *const CUgraphEdgeData {
        match &self.edges {
            Some(e) if !e.is_empty() => e.as_ptr(),
            _ => std::ptr::null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::gate::Kind;

    #[test]
    fn oversized_arrays_are_answered_not_allocated() {
        let mut buf = Vec::new();
        Encoder::new(&mut buf).put(u32::MAX);
        let r = Deps::decode(&mut Decoder::new(&buf), &Handles::default()).unwrap();
        assert_eq!(r.err(), Some(CUresult::CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn deps_decode_with_edges() {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf);
        enc.put(2u32);
        enc.put(0x10u64);
        enc.put(0x20u64);
        enc.put_flag(true);
        enc.put([1u8, 0, 1, 0, 0, 0, 0, 0]);
        enc.put([0u8; 8]);
        let handles = Handles::default();
        handles.mint_all(Kind::GraphNode, &[0x10, 0x20], 0x1);
        let mut dec = Decoder::new(&buf);
        let d = Deps::decode(&mut dec, &handles).unwrap().unwrap();
        dec.finish().unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.nodes[1] as usize, 0x20);
        let e = d.edges.as_ref().unwrap();
        assert_eq!((e[0].from_port, e[0].type_, e[1].type_), (1, 1, 0));
        assert!(!d.edges_ptr().is_null());
        let mut out = Vec::new();
        put_edge(&mut Encoder::new(&mut out), &e[0]);
        assert_eq!(out, [1, 0, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn truncated_deps_are_a_decode_error() {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf);
        enc.put(3u32);
        enc.put(0x10u64);
        assert!(Deps::decode(&mut Decoder::new(&buf), &Handles::default()).is_err());
    }

    #[test]
    fn every_dependency_passes_the_gate() {
        let handles = Handles::default();
        handles.mint(Kind::GraphNode, 0x10, 0x1);
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf);
        enc.put(2u32);
        enc.put(0x10u64);
        enc.put(0x30u64);
        enc.put_flag(false);
        let r = Deps::decode(&mut Decoder::new(&buf), &handles).unwrap();
        assert_eq!(r.err(), Some(CUresult::CUDA_ERROR_INVALID_HANDLE));
    }
}
