//! The JIT linker. The creation options' log buffers are host buffers kept with the link state
//! until `cuLinkDestroy` (the driver writes them during later calls); their contents go back to
//! the guest after every call. Guest halves: `shim/src/handlers/link.rs`. Link states pass the
//! client's handle gate (`gate.rs`): minted on creation, retired on destruction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cuda_headers::*;
use protocol::{DecodeError, Decoder, Encoder, ResponseHeader};

use super::module::JitOptions;
use super::{real_or_unsupported, respond};
use crate::dispatch::gate::{admit, Kind};
use crate::dispatch::ClientContext;

/// A link state's creation options, owned here.
struct Owned(JitOptions);

// SAFETY: the raw pointers inside point into the options' own vectors (log buffers), which move
// with them; nothing else shares them.
unsafe impl Send for Owned {}

static LINKS: Mutex<Option<HashMap<u64, Owned>>> = Mutex::new(None);

fn links() -> std::sync::MutexGuard<'static, Option<HashMap<u64, Owned>>> {
    LINKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `bytes info, bytes error` of the link's creation logs (empty for an unknown state).
fn put_logs(enc: &mut Encoder<'_>, state: u64) {
    let links = links();
    let (info, error) = links
        .as_ref()
        .and_then(|m| m.get(&state))
        .map_or((&[][..], &[][..]), |o| o.0.logs());
    enc.put_bytes(info);
    enc.put_bytes(error);
}

/// The largest input a guest may add (1 GiB).
const MAX_INPUT: usize = 1 << 30;

/// `cuLinkCreate(_v2)`: `JIT options` → result, `u64 state`, JIT results.
pub fn create(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut jit = JitOptions::decode(dec)?;
    dec.finish()?;
    let mut state: CUlinkState = std::ptr::null_mut();
    let count = jit.count();
    // SAFETY: (both arms) the option arrays and log buffers live in `jit`, which is kept with
    // the state until cuLinkDestroy.
    let r = unsafe {
        if name == "cuLinkCreate" {
            real_or_unsupported!(cuLinkCreate, out)(
                count,
                jit.options_ptr(),
                jit.values_ptr(),
                &mut state,
            )
        } else {
            real_or_unsupported!(cuLinkCreate_v2, out)(
                count,
                jit.options_ptr(),
                jit.values_ptr(),
                &mut state,
            )
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(state as u64);
    jit.encode(&mut enc);
    if r == CUresult::CUDA_SUCCESS {
        client.handles.mint(Kind::LinkState, state as u64, 0);
        links()
            .get_or_insert_with(HashMap::new)
            .insert(state as u64, Owned(jit));
    }
    Ok(())
}

/// `cuLinkAddData(_v2)`, `cuLinkAddFile(_v2)` (the guest read the file): `u64 state, u32 type,
/// bytes data, bytes name, JIT options` → result, JIT results, `bytes info, bytes error`.
pub fn add_data(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let state: u64 = dec.get()?;
    let kind = CUjitInputType(dec.get()?);
    let data = dec.get_bytes()?.to_vec();
    let mut input_name = dec.get_bytes()?.to_vec();
    let mut jit = JitOptions::decode(dec)?;
    dec.finish()?;
    if data.len() > MAX_INPUT || input_name.contains(&0) {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    input_name.push(0);
    let count = jit.count();
    let s = admit!(client.handles.link_state(state), out);
    // SAFETY: (both arms) data, name and options live for the call; the driver copies the input.
    let r = unsafe {
        let (d, n) = (data.as_ptr().cast_mut().cast(), input_name.as_ptr().cast());
        if name == "cuLinkAddData" || name == "cuLinkAddFile" {
            real_or_unsupported!(cuLinkAddData, out)(
                s,
                kind,
                d,
                data.len(),
                n,
                count,
                jit.options_ptr(),
                jit.values_ptr(),
            )
        } else {
            real_or_unsupported!(cuLinkAddData_v2, out)(
                s,
                kind,
                d,
                data.len(),
                n,
                count,
                jit.options_ptr(),
                jit.values_ptr(),
            )
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    jit.encode(&mut enc);
    put_logs(&mut enc, state);
    Ok(())
}

/// `cuLinkComplete`: `u64 state` → result, `bytes cubin`, `bytes info, bytes error` (sent on
/// failure too, with an empty cubin: the error log is the point then).
pub fn complete(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let state: u64 = dec.get()?;
    dec.finish()?;
    let s = admit!(client.handles.link_state(state), out);
    let mut cubin: *mut std::ffi::c_void = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: live locals.
    let r = unsafe { real_or_unsupported!(cuLinkComplete, out)(s, &mut cubin, &mut size) };
    let bytes = if r == CUresult::CUDA_SUCCESS && !cubin.is_null() {
        // SAFETY: the driver's cubin holds `size` bytes until cuLinkDestroy.
        unsafe { std::slice::from_raw_parts(cubin.cast::<u8>(), size) }
    } else {
        &[]
    };
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put_bytes(bytes);
    put_logs(&mut enc, state);
    Ok(())
}

/// `cuLinkDestroy` (generated encoding: `u64 state`) → result; frees the kept options and
/// retires the state.
pub fn destroy(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let state: u64 = dec.get()?;
    dec.finish()?;
    let s = admit!(client.handles.link_state(state), out);
    // SAFETY: a link state the gate admitted.
    let r = unsafe { real_or_unsupported!(cuLinkDestroy, out)(s) };
    if r == CUresult::CUDA_SUCCESS {
        client.handles.retire(Kind::LinkState, state);
        if let Some(m) = links().as_mut() {
            m.remove(&state);
        }
    }
    respond(out, r);
    Ok(())
}
