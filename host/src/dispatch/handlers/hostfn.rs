//! Host functions and stream callbacks, run in the guest (see `dispatch/callbacks.rs`).

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder};

use super::{real_or_unsupported, respond};
use crate::dispatch::callbacks::{
    host_fn_trampoline, stream_callback_trampoline, CallbackQueue, KIND_HOST_FN,
    KIND_STREAM_CALLBACK,
};
use crate::dispatch::ClientContext;

/// Registers a trampoline for guest function `func` with `data`: `register(stream, ticket)`
/// calls the real driver; a ticket the driver refused is freed here.
fn register_ticket(
    client: &Arc<ClientContext>,
    kind: u8,
    stream: u64,
    func: u64,
    data: u64,
    out: &mut Vec<u8>,
    register: impl FnOnce(CUstream, *mut std::ffi::c_void) -> CUresult,
) {
    let stream = match client.handles.stream(stream) {
        Ok(s) => s,
        Err(refused) => return respond(out, refused),
    };
    let ticket = client.callbacks.ticket(kind, func, data);
    let r = register(stream, ticket);
    if r != CUresult::CUDA_SUCCESS {
        // SAFETY: the driver refused, so it never calls the trampoline with this ticket.
        unsafe { CallbackQueue::forget_ticket(ticket) };
    }
    respond(out, r);
}

/// `cuLaunchHostFunc`: `u64 stream, u64 fn, u64 data` → result.
pub fn launch_host_func(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (stream, func, data): (u64, u64, u64) = (dec.get()?, dec.get()?, dec.get()?);
    dec.finish()?;
    let f = if name.ends_with("_ptsz") {
        real_or_unsupported!(cuLaunchHostFunc_ptsz, out)
    } else {
        real_or_unsupported!(cuLaunchHostFunc, out)
    };
    register_ticket(
        client,
        KIND_HOST_FN,
        stream,
        func,
        data,
        out,
        |s, ticket| {
            // SAFETY: the trampoline matches CUhostFn and owns `ticket` once the driver takes it.
            unsafe { f(s, Some(host_fn_trampoline), ticket) }
        },
    );
    Ok(())
}

/// `cuStreamAddCallback`: `u64 stream, u64 fn, u64 data, u32 flags` → result.
pub fn stream_add_callback(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let (stream, func, data): (u64, u64, u64) = (dec.get()?, dec.get()?, dec.get()?);
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let f = if name.ends_with("_ptsz") {
        real_or_unsupported!(cuStreamAddCallback_ptsz, out)
    } else {
        real_or_unsupported!(cuStreamAddCallback, out)
    };
    register_ticket(
        client,
        KIND_STREAM_CALLBACK,
        stream,
        func,
        data,
        out,
        |s, ticket| {
            // SAFETY: the trampoline matches CUstreamCallback and owns `ticket` once the driver
            // takes it.
            unsafe { f(s, Some(stream_callback_trampoline), ticket, flags) }
        },
    );
    Ok(())
}
