//! Virtual memory management. Guest halves: `shim/src/handlers/vmm.rs`.
//!
//! Allocation handles pass the gate (`Kind::Allocation`): `cuMemCreate` and
//! `cuMemRetainAllocationHandle` each mint one reference, `cuMemRelease` (generated) retires
//! one, and a handle the client holds no reference to is refused before the driver sees it.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

fn get_props(dec: &mut Decoder<'_>) -> Result<CUmemAllocationProp, DecodeError> {
    // SAFETY: a plain C struct; its one pointer is cleared before use.
    let mut p: CUmemAllocationProp = unsafe { dec.get_raw() }?;
    p.win32HandleMetaData = std::ptr::null_mut();
    Ok(p)
}

/// `cuMemCreate`: `u64 size, CUmemAllocationProp, u64 flags` → result, `u64 handle`.
pub fn create(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let size: u64 = dec.get()?;
    let prop = get_props(dec)?;
    let flags: u64 = dec.get()?;
    dec.finish()?;
    // Physical memory: counted against the client's quota until `cuMemRelease`.
    let reservation = match client.quota.reserve(size) {
        Ok(r) => r,
        Err(refused) => {
            respond(out, refused);
            return Ok(());
        }
    };
    let mut handle: CUmemGenericAllocationHandle = 0;
    let create = match crate::driver::real::cuMemCreate() {
        Some(f) => f,
        None => {
            client.quota.cancel(reservation);
            crate::dispatch::missing("cuMemCreate", out);
            return Ok(());
        }
    };
    // SAFETY: live locals.
    let r = unsafe { create(&mut handle, size as usize, &prop, flags) };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Allocation, handle, 0);
        client.quota.commit(reservation, handle, size);
    } else {
        client.quota.cancel(reservation);
    }
    ResponseHeader::start(out, r.0).put(handle);
    Ok(())
}

/// `cuMemGetAllocationGranularity`: `CUmemAllocationProp, u32 option` → result, `u64`.
pub fn granularity(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let prop = get_props(dec)?;
    let option = CUmemAllocationGranularity_flags(dec.get()?);
    dec.finish()?;
    let mut g = 0usize;
    // SAFETY: live locals.
    let r =
        unsafe { real_or_unsupported!(cuMemGetAllocationGranularity, out)(&mut g, &prop, option) };
    ResponseHeader::start(out, r.0).put(g as u64);
    Ok(())
}

/// `cuMemGetAllocationPropertiesFromHandle`: `u64 handle` → result, `CUmemAllocationProp`
/// (Windows pointer cleared).
pub fn properties(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let handle: u64 = dec.get()?;
    dec.finish()?;
    let handle = admit!(client.handles.allocation(handle), out);
    // SAFETY: all-zero is valid for this plain struct.
    let mut p: CUmemAllocationProp = unsafe { std::mem::zeroed() };
    // SAFETY: a live local.
    let r = unsafe {
        real_or_unsupported!(cuMemGetAllocationPropertiesFromHandle, out)(&mut p, handle)
    };
    p.win32HandleMetaData = std::ptr::null_mut();
    let mut enc = ResponseHeader::start(out, r.0);
    if r == CUresult::CUDA_SUCCESS {
        // SAFETY: plain data with its pointer cleared.
        unsafe { enc.put_raw(&p) };
    }
    Ok(())
}

/// `cuMemRetainAllocationHandle`: `u64 device address` → result, `u64 handle` (one more
/// reference the client holds).
pub fn retain(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let addr: u64 = dec.get()?;
    dec.finish()?;
    let mut handle: CUmemGenericAllocationHandle = 0;
    // SAFETY: a live local; the address is only looked up by the driver, never dereferenced
    // on the CPU.
    let r = unsafe {
        real_or_unsupported!(cuMemRetainAllocationHandle, out)(
            &mut handle,
            addr as usize as *mut std::ffi::c_void,
        )
    };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Allocation, handle, 0);
    }
    ResponseHeader::start(out, r.0).put(handle);
    Ok(())
}
