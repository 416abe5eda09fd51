//! CUDA IPC handles, sealed (`dispatch/ipc_seal.rs`): the four calls keep their generated wire
//! formats, but a guest is given only sealed handles and what it opens is unsealed first, so
//! that it can open what a client of this host was given and nothing else.

use std::ffi::c_char;
use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ipc_seal::{self, HANDLE_LEN};
use crate::dispatch::ClientContext;

fn bytes_of(reserved: &[c_char; HANDLE_LEN]) -> [u8; HANDLE_LEN] {
    reserved.map(|c| c as u8)
}

fn chars_of(bytes: [u8; HANDLE_LEN]) -> [c_char; HANDLE_LEN] {
    bytes.map(|b| b as c_char)
}

/// `handle` through `transform` (sealing or unsealing); `None` (after answering
/// `CUDA_ERROR_NOT_SUPPORTED`) when this worker has no key.
fn through(
    transform: fn(&[u8; HANDLE_LEN]) -> Option<[u8; HANDLE_LEN]>,
    handle: &[c_char; HANDLE_LEN],
    out: &mut Vec<u8>,
) -> Option<[c_char; HANDLE_LEN]> {
    let done = transform(&bytes_of(handle)).map(chars_of);
    if done.is_none() {
        tracing::warn!("CUDA IPC refused: this worker was given no seal key");
        respond(out, CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    done
}

/// `cuIpcGetMemHandle` (`inout CUipcMemHandle, u64 dptr`) and `cuIpcGetEventHandle`
/// (`inout CUipcEventHandle, u64 event`, the event passing the gate) → result, `[handle]`:
/// the driver's handle, sealed.
pub fn get_handle(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: 64 plain bytes; the guest's value is overwritten before the driver sees it.
    let present = unsafe { dec.get_opt_raw::<[c_char; HANDLE_LEN]>()? }.is_some();
    let target: u64 = dec.get()?;
    dec.finish()?;
    let mut handle = [0 as c_char; HANDLE_LEN];
    let r = if name == "cuIpcGetEventHandle" {
        let event = admit!(client.handles.event(target), out);
        let mut h = CUipcEventHandle { reserved: handle };
        let ptr: *mut CUipcEventHandle = if present {
            &mut h
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: NULL or a live local; an event the gate admitted.
        let r = unsafe { real_or_unsupported!(cuIpcGetEventHandle, out)(ptr, event) };
        handle = h.reserved;
        r
    } else {
        let mut h = CUipcMemHandle { reserved: handle };
        let ptr: *mut CUipcMemHandle = if present {
            &mut h
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: NULL or a live local; the driver checks the address.
        let r = unsafe { real_or_unsupported!(cuIpcGetMemHandle, out)(ptr, target) };
        handle = h.reserved;
        r
    };
    if r != CUresult::CUDA_SUCCESS {
        respond(out, r);
        return Ok(());
    }
    let Some(sealed) = through(ipc_seal::seal, &handle, out) else {
        return Ok(());
    };
    let mut enc = ResponseHeader::start(out, 0);
    if present {
        // SAFETY: 64 plain bytes.
        unsafe { enc.put_raw(&sealed) };
    }
    Ok(())
}

/// `cuIpcOpenMemHandle(_v2)` (`inout u64 dptr, CUipcMemHandle, u32 flags`) → result, `[u64]`:
/// the presented handle unsealed, then opened.
pub fn open_mem(
    name: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: (both reads) plain data: an address the driver writes, and 64 bytes.
    let present = unsafe { dec.get_opt_raw::<u64>()? }.is_some();
    // SAFETY: as above.
    let presented: [c_char; HANDLE_LEN] = unsafe { dec.get_raw()? };
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let Some(reserved) = through(ipc_seal::unseal, &presented, out) else {
        return Ok(());
    };
    let handle = CUipcMemHandle { reserved };
    let mut dptr: CUdeviceptr = 0;
    let ptr: *mut CUdeviceptr = if present {
        &mut dptr
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: (both arms) NULL or a live local; the handle is passed by value.
    let r = unsafe {
        if name == "cuIpcOpenMemHandle" {
            real_or_unsupported!(cuIpcOpenMemHandle, out)(ptr, handle, flags)
        } else {
            real_or_unsupported!(cuIpcOpenMemHandle_v2, out)(ptr, handle, flags)
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    if present {
        enc.put(dptr);
    }
    Ok(())
}

/// `cuIpcOpenEventHandle` (`inout CUevent, CUipcEventHandle`) → result, `[u64 event]`: the
/// presented handle unsealed, then opened; the event is minted as the client's.
pub fn open_event(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: (both reads) plain data: a handle the driver writes, and 64 bytes.
    let present = unsafe { dec.get_opt_raw::<u64>()? }.is_some();
    // SAFETY: as above.
    let presented: [c_char; HANDLE_LEN] = unsafe { dec.get_raw()? };
    dec.finish()?;
    let Some(reserved) = through(ipc_seal::unseal, &presented, out) else {
        return Ok(());
    };
    let handle = CUipcEventHandle { reserved };
    let mut event: CUevent = std::ptr::null_mut();
    let ptr: *mut CUevent = if present {
        &mut event
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: NULL or a live local; the handle is passed by value.
    let r = unsafe { real_or_unsupported!(cuIpcOpenEventHandle, out)(ptr, handle) };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::Event, event as u64, 0);
    }
    let mut enc = ResponseHeader::start(out, r.0);
    if present {
        enc.put(event as u64);
    }
    Ok(())
}
