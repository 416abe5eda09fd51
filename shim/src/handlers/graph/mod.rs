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
//!
//! Split by concern: [`nodes`] (adding nodes, setting their parameters), [`params`] (reading
//! them back), [`topology`] (nodes, edges, dependencies), [`instantiate`] (and the DOT dump),
//! [`attributes`]. The node body every kind travels as is here.

#![allow(non_snake_case)]

pub(crate) mod attributes;
pub(crate) mod instantiate;
pub(crate) mod nodes;
pub(crate) mod params;
pub(crate) mod topology;

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
pub(crate) use kernel_fields;

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
                CUmemorytype::CU_MEMORYTYPE_UNIFIED => {
                    super::memory::unified::is_guest_memory(addr)?
                }
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
