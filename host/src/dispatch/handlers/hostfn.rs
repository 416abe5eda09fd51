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

/// `cuLaunchHostFunc`: `u64 stream, u64 fn, u64 data` → result.
pub fn launch_host_func(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let func: u64 = dec.get()?;
    let data: u64 = dec.get()?;
    dec.finish()?;
    let ticket = client.callbacks.ticket(KIND_HOST_FN, func, data);
    let f = if name.ends_with("_ptsz") {
        real_or_unsupported!(cuLaunchHostFunc_ptsz, out)
    } else {
        real_or_unsupported!(cuLaunchHostFunc, out)
    };
    // SAFETY: the trampoline matches CUhostFn and owns `ticket` once the driver takes it.
    let r = unsafe { f(stream as CUstream, Some(host_fn_trampoline), ticket) };
    if r != CUresult::CUDA_SUCCESS {
        // SAFETY: the driver refused, so it never calls the trampoline with this ticket.
        unsafe { CallbackQueue::forget_ticket(ticket) };
    }
    respond(out, r);
    Ok(())
}

/// `cuStreamAddCallback`: `u64 stream, u64 fn, u64 data, u32 flags` → result.
pub fn stream_add_callback(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let func: u64 = dec.get()?;
    let data: u64 = dec.get()?;
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let ticket = client.callbacks.ticket(KIND_STREAM_CALLBACK, func, data);
    let f = if name.ends_with("_ptsz") {
        real_or_unsupported!(cuStreamAddCallback_ptsz, out)
    } else {
        real_or_unsupported!(cuStreamAddCallback, out)
    };
    // SAFETY: the trampoline matches CUstreamCallback and owns `ticket` once the driver takes it.
    let r = unsafe {
        f(
            stream as CUstream,
            Some(stream_callback_trampoline),
            ticket,
            flags,
        )
    };
    if r != CUresult::CUDA_SUCCESS {
        // SAFETY: the driver refused, so it never calls the trampoline with this ticket.
        unsafe { CallbackQueue::forget_ticket(ticket) };
    }
    respond(out, r);
    Ok(())
}
