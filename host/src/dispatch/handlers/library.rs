//! Library kernels, texture/surface references by name, batched stream memory operations.
//! Guest halves: `shim/src/handlers/library.rs`.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::device::c_string;
use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

/// `cuLibraryEnumerateKernels`, `cuModuleEnumerateFunctions`: `u64 owner, u32 n` → result,
/// `n × u64 handle`: a library's kernels or a module's functions (the owner admitted by the
/// gate), each recorded as the owner's so that the guest may launch it.
pub fn enumerate(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let n: u32 = dec.get()?;
    dec.finish()?;
    if n as usize > super::arrays::MAX_ARRAY {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let mut handles: Vec<u64> = vec![0; n as usize];
    let (r, made) = if name == "cuModuleEnumerateFunctions" {
        let module = admit!(client.handles.module(owner), out);
        let enumerate = real_or_unsupported!(cuModuleEnumerateFunctions, out);
        // SAFETY: `handles` holds `n` handle-sized entries.
        let r = unsafe { enumerate(handles.as_mut_ptr().cast(), n, module) };
        (r, Kind::Function)
    } else {
        let lib = admit!(client.handles.library(owner), out);
        let enumerate = real_or_unsupported!(cuLibraryEnumerateKernels, out);
        // SAFETY: `handles` holds `n` handle-sized entries.
        let r = unsafe { enumerate(handles.as_mut_ptr().cast(), n, lib) };
        (r, Kind::Kernel)
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        for handle in handles {
            client.handles.mint(made, handle, owner);
            enc.put(handle);
        }
    }
    Ok(())
}

/// `cuModuleGetTexRef`, `cuModuleGetSurfRef`: `u64 module, bytes name` → result, `u64 ref`.
pub fn get_ref(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let module: u64 = dec.get()?;
    let symbol = c_string(dec.get_bytes()?);
    dec.finish()?;
    let owner = module;
    let module = admit!(client.handles.module(module), out);
    let mut handle: u64 = 0;
    // SAFETY: (both arms) `symbol` is NUL-terminated; the out-pointer is a live local of
    // handle size.
    let r = unsafe {
        if name == "cuModuleGetTexRef" {
            real_or_unsupported!(cuModuleGetTexRef, out)(
                (&mut handle as *mut u64).cast(),
                module,
                symbol.as_ptr(),
            )
        } else {
            real_or_unsupported!(cuModuleGetSurfRef, out)(
                (&mut handle as *mut u64).cast(),
                module,
                symbol.as_ptr(),
            )
        }
    };
    if r == CUresult::CUDA_SUCCESS {
        let kind = if name == "cuModuleGetTexRef" {
            Kind::TexRef
        } else {
            Kind::SurfRef
        };
        client.handles.mint(kind, handle, owner);
    }
    ResponseHeader::start(out, r.0).put(handle);
    Ok(())
}

/// `cuStreamBatchMemOp(_ptsz)`: `u64 stream, u32 n, n × CUstreamBatchMemOpParams, u32 flags`
/// → result. The operations name device addresses only; the driver validates them.
pub fn batch_mem_op(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let n: u32 = dec.get()?;
    if n > 256 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    // SAFETY: a union of plain data.
    let mut ops: Vec<CUstreamBatchMemOpParams> = (0..n)
        .map(|_| unsafe { dec.get_raw() })
        .collect::<Result<_, _>>()?;
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    // SAFETY: (both arms) `ops` holds `n` entries.
    let r = unsafe {
        if name.ends_with("_ptsz") {
            real_or_unsupported!(cuStreamBatchMemOp_ptsz, out)(stream, n, ops.as_mut_ptr(), flags)
        } else {
            real_or_unsupported!(cuStreamBatchMemOp, out)(stream, n, ops.as_mut_ptr(), flags)
        }
    };
    respond(out, r);
    Ok(())
}
