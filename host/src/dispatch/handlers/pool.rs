//! Memory pools, graph-memory and memory-range attributes, access descriptors (pools and VMM
//! ranges). Guest halves: `shim/src/handlers/pool.rs`. Pools pass the client's handle gate
//! (`gate.rs`); a created pool is minted there.

use std::ffi::c_void;
use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::arrays::MAX_ARRAY;
use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

/// The largest attribute value (every known one is 4 or 8 bytes).
const MAX_VALUE: usize = 64;

/// `cuMemPoolGetAttribute`, `cuDeviceGetGraphMemAttribute`: `u64 handle, u32 attr, u32 size`
/// → result, `bytes value` (`size` bytes; the guest knows each attribute's size).
pub fn get_sized(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    let attr: u32 = dec.get()?;
    let size = dec.get::<u32>()? as usize;
    dec.finish()?;
    if size > MAX_VALUE {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let mut value = [0u8; MAX_VALUE];
    let v = value.as_mut_ptr().cast::<c_void>();
    let pool = if name == "cuMemPoolGetAttribute" {
        admit!(client.handles.memory_pool(handle), out)
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (both arms) `value` has room for every attribute value (at most 8 bytes).
    let r = unsafe {
        if name == "cuMemPoolGetAttribute" {
            real_or_unsupported!(cuMemPoolGetAttribute, out)(pool, CUmemPool_attribute(attr), v)
        } else {
            real_or_unsupported!(cuDeviceGetGraphMemAttribute, out)(
                handle as CUdevice,
                CUgraphMem_attribute(attr),
                v,
            )
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        enc.put_bytes(&value[..size]);
    }
    Ok(())
}

/// `cuMemPoolSetAttribute`, `cuDeviceSetGraphMemAttribute`: `u64 handle, u32 attr, bytes
/// value` → result.
pub fn set_sized(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    let attr: u32 = dec.get()?;
    let bytes = dec.get_bytes()?;
    dec.finish()?;
    if bytes.len() > MAX_VALUE {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let mut value = [0u8; MAX_VALUE];
    value[..bytes.len()].copy_from_slice(bytes);
    let v = value.as_mut_ptr().cast::<c_void>();
    let pool = if name == "cuMemPoolSetAttribute" {
        admit!(client.handles.memory_pool(handle), out)
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (both arms) `value` holds the attribute value, zero-padded.
    let r = unsafe {
        if name == "cuMemPoolSetAttribute" {
            real_or_unsupported!(cuMemPoolSetAttribute, out)(pool, CUmemPool_attribute(attr), v)
        } else {
            real_or_unsupported!(cuDeviceSetGraphMemAttribute, out)(
                handle as CUdevice,
                CUgraphMem_attribute(attr),
                v,
            )
        }
    };
    respond(out, r);
    Ok(())
}

/// `cuMemPoolCreate`: `CUmemPoolProps` (Windows pointer cleared) → result, `u64 pool` (minted).
pub fn create(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: a plain C struct; its one pointer is cleared below.
    let mut props: CUmemPoolProps = unsafe { dec.get_raw() }?;
    dec.finish()?;
    props.win32SecurityAttributes = std::ptr::null_mut();
    let mut pool: CUmemoryPool = std::ptr::null_mut();
    // SAFETY: live locals.
    let r = unsafe { real_or_unsupported!(cuMemPoolCreate, out)(&mut pool, &props) };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::MemoryPool, pool as u64, 0);
    }
    ResponseHeader::start(out, r.0).put(pool as u64);
    Ok(())
}

/// `cuMemPoolSetAccess`, `cuMemSetAccess`: `u64 target (pool or address), u64 size (0 for
/// pools), u32 n, n × CUmemAccessDesc` → result.
pub fn set_access(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let target: u64 = dec.get()?;
    let size: u64 = dec.get()?;
    let n = dec.get::<u32>()? as usize;
    if n > MAX_ARRAY {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    // SAFETY: CUmemAccessDesc is plain data (a location and flags).
    let desc: Vec<CUmemAccessDesc> = (0..n)
        .map(|_| unsafe { dec.get_raw() })
        .collect::<Result<_, _>>()?;
    dec.finish()?;
    let d = if desc.is_empty() {
        std::ptr::null()
    } else {
        desc.as_ptr()
    };
    let pool = if name == "cuMemPoolSetAccess" {
        admit!(client.handles.memory_pool(target), out)
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (both arms) `desc` holds `n` entries.
    let r = unsafe {
        if name == "cuMemPoolSetAccess" {
            real_or_unsupported!(cuMemPoolSetAccess, out)(pool, d, n)
        } else {
            real_or_unsupported!(cuMemSetAccess, out)(target, size as usize, d, n)
        }
    };
    respond(out, r);
    Ok(())
}

/// The largest range-attribute value (`ACCESSED_BY` is an array of device ids).
const MAX_RANGE_VALUE: u64 = 1 << 16;

/// `cuMemRangeGetAttribute(s)`: `u64 ptr, u64 count, u32 n, n × (u32 attr, u64 size)` →
/// result, `n × bytes value`. Both forms call `cuMemRangeGetAttributes`.
pub fn range_attributes(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let ptr: u64 = dec.get()?;
    let count: u64 = dec.get()?;
    let n = dec.get::<u32>()? as usize;
    if n > 64 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let mut attrs = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        attrs.push(CUmem_range_attribute(dec.get()?));
        let size: u64 = dec.get()?;
        if size > MAX_RANGE_VALUE {
            respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
            return Ok(());
        }
        values.push(vec![0u8; size as usize]);
    }
    dec.finish()?;
    let mut sizes: Vec<usize> = values.iter().map(Vec::len).collect();
    let mut data: Vec<*mut c_void> = values.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
    // SAFETY: `data[i]` holds `sizes[i]` bytes; all arrays hold `n` entries.
    let r = unsafe {
        real_or_unsupported!(cuMemRangeGetAttributes, out)(
            data.as_mut_ptr(),
            sizes.as_mut_ptr(),
            attrs.as_mut_ptr(),
            n,
            ptr,
            count as usize,
        )
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        for v in &values {
            enc.put_bytes(v);
        }
    }
    Ok(())
}
