//! Host functions and stream callbacks: the host's trampoline queues them; this process's
//! callback thread (started on the first registration, never before) fetches each with
//! `CALLBACK_NEXT`, runs it here, and reports it done so the stream can go on.
#![allow(non_snake_case)]

use std::ffi::c_void;
use std::sync::Once;

use cuda_headers::*;
use protocol::special;

use crate::channel::with_channel;
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

const KIND_HOST_FN: u8 = 0;
const KIND_STREAM_CALLBACK: u8 = 1;

static CALLBACK_THREAD: Once = Once::new();

pub(crate) fn ensure_callback_thread() {
    CALLBACK_THREAD.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("vgpu-callbacks".into())
            .spawn(callback_loop);
        if let Err(e) = spawned {
            log!(Level::Error, "cannot start the host-callback thread: {e}");
        }
    });
}

fn callback_loop() {
    let mut finished = 0u64;
    loop {
        let next = with_channel(|channel| {
            channel.exchange(
                |buf| protocol::RequestHeader::start(buf, special::CALLBACK_NEXT, 0).put(finished),
                |dec| {
                    let get = |d: &mut protocol::Decoder<'_>| d.get::<u64>().map_err(bad_response);
                    let id = get(dec)?;
                    let kind: u8 = dec.get().map_err(bad_response)?;
                    let (func, data, stream) = (get(dec)?, get(dec)?, get(dec)?);
                    let status: u32 = dec.get().map_err(bad_response)?;
                    Ok((id, kind, func, data, stream, status))
                },
            )
        });
        let Ok((id, kind, func, data, stream, status)) = next else {
            // The host is gone: nothing will be queued any more.
            return;
        };
        match kind {
            KIND_HOST_FN => {
                // SAFETY: `func` is the CUhostFn the application registered in this process.
                let f: unsafe extern "C" fn(*mut c_void) =
                    unsafe { std::mem::transmute(func as usize) };
                // SAFETY: called once with the application's own userData, as CUDA would.
                unsafe { f(data as usize as *mut c_void) };
            }
            KIND_STREAM_CALLBACK => {
                // SAFETY: `func` is the CUstreamCallback the application registered here.
                let f: unsafe extern "C" fn(CUstream, CUresult, *mut c_void) =
                    unsafe { std::mem::transmute(func as usize) };
                // SAFETY: as above; the stream handle is the host's, as the application saw it.
                unsafe {
                    f(
                        stream as usize as CUstream,
                        CUresult(status),
                        data as usize as *mut c_void,
                    )
                };
            }
            other => log!(Level::Error, "unknown callback kind {other} from the host"),
        }
        finished = id;
    }
}

fn register(
    id: u32,
    stream: CUstream,
    func: usize,
    data: *mut c_void,
    flags: Option<u32>,
) -> CuResult {
    if func == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    ensure_callback_thread();
    call_with(
        id,
        |enc| {
            enc.put(stream as u64);
            enc.put(func as u64);
            enc.put(data as u64);
            if let Some(flags) = flags {
                enc.put(flags);
            }
        },
        |_| Ok(()),
    )
}

/// Queues `fn_(userData)` on the stream; it runs in this process.
///
/// # Safety
/// `fn_` must be safe to call with `userData` from another thread of this process.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL function; the host's result.
pub unsafe fn cuLaunchHostFunc(
    hStream: CUstream,
    fn_: CUhostFn,
    userData: *mut c_void,
) -> CuResult {
    register(
        shim_macros::cuda_call_id!(cuLaunchHostFunc),
        hStream,
        fn_.map_or(0, |f| f as usize),
        userData,
        None,
    )
}

/// As [`cuLaunchHostFunc`], per-thread default stream.
///
/// # Safety
/// As [`cuLaunchHostFunc`].
///
/// # Errors
/// As [`cuLaunchHostFunc`].
pub unsafe fn cuLaunchHostFunc_ptsz(
    hStream: CUstream,
    fn_: CUhostFn,
    userData: *mut c_void,
) -> CuResult {
    register(
        shim_macros::cuda_call_id!(cuLaunchHostFunc_ptsz),
        hStream,
        fn_.map_or(0, |f| f as usize),
        userData,
        None,
    )
}

/// Queues `callback(stream, status, userData)`; it runs in this process.
///
/// # Safety
/// As [`cuLaunchHostFunc`].
///
/// # Errors
/// As [`cuLaunchHostFunc`].
pub unsafe fn cuStreamAddCallback(
    hStream: CUstream,
    callback: CUstreamCallback,
    userData: *mut c_void,
    flags: u32,
) -> CuResult {
    register(
        shim_macros::cuda_call_id!(cuStreamAddCallback),
        hStream,
        callback.map_or(0, |f| f as usize),
        userData,
        Some(flags),
    )
}

/// As [`cuStreamAddCallback`], per-thread default stream.
///
/// # Safety
/// As [`cuLaunchHostFunc`].
///
/// # Errors
/// As [`cuLaunchHostFunc`].
pub unsafe fn cuStreamAddCallback_ptsz(
    hStream: CUstream,
    callback: CUstreamCallback,
    userData: *mut c_void,
    flags: u32,
) -> CuResult {
    register(
        shim_macros::cuda_call_id!(cuStreamAddCallback_ptsz),
        hStream,
        callback.map_or(0, |f| f as usize),
        userData,
        Some(flags),
    )
}
