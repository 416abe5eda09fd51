//! Contexts made ahead, and destroyed behind.
//!
//! Creating a context costs ~100 ms on an H200 and destroying one ~55 ms, which is most of what
//! Ollama's discovery (`cuCtxCreate` … `cuCtxDestroy`) spends. The spare worker creates contexts
//! ahead with default flags on device 0 and leaves them current to no thread; a client's
//! `cuCtxCreate` with those arguments gets one of them, pushed on the calling thread as a fresh
//! context would be. A destroyed context is popped from the calling thread at once and handed to
//! a reaper thread that destroys it; its memory returns to the device a few tens of ms later.
//! The guest cannot tell the difference through the API: the context is new to it, has made no
//! allocation, and every handle it destroyed is unusable at once.

use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;

use cuda_headers::*;

use crate::driver::real;

/// A context this process made, current to no thread (or about to be destroyed).
struct Floating(CUcontext);

// SAFETY: a context handle may be used from any thread; a floating one is current to none, and
// the pool hands each to one owner.
unsafe impl Send for Floating {}

/// Contexts created ahead, and the reaper that destroys contexts behind.
#[derive(Default)]
pub struct ContextPool {
    ready: Mutex<Vec<(CUdevice, Floating)>>,
    reaper: Mutex<Option<Sender<Floating>>>,
}

impl ContextPool {
    /// Creates `count` contexts on device 0 with default flags and floats them (current to no
    /// thread). Failures only log: the pool is an optimisation.
    pub fn fill(&self, count: u32) {
        let (Some(get), Some(create), Some(pop)) = (
            real::cuDeviceGet(),
            real::cuCtxCreate_v4(),
            real::cuCtxPopCurrent_v2(),
        ) else {
            return;
        };
        let mut dev: CUdevice = 0;
        // SAFETY: out-pointer to a live local.
        if unsafe { get(&mut dev, 0) } != CUresult::CUDA_SUCCESS {
            return;
        }
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..count {
            let mut ctx: CUcontext = std::ptr::null_mut();
            // SAFETY: NULL parameters are allowed; out-pointer to a live local.
            let r = unsafe { create(&mut ctx, std::ptr::null_mut(), 0, dev) };
            if r != CUresult::CUDA_SUCCESS {
                tracing::warn!(result = r.0, "could not create a context ahead");
                return;
            }
            let mut popped: CUcontext = std::ptr::null_mut();
            // SAFETY: the context was just pushed on this thread.
            unsafe { pop(&mut popped) };
            ready.push((dev, Floating(ctx)));
        }
    }

    /// A context made ahead for `(dev, flags)` with no creation parameters, pushed on the calling
    /// thread; `None` when the pool has none that fits.
    pub fn take(&self, dev: CUdevice, flags: u32) -> Option<CUcontext> {
        if flags != 0 {
            return None;
        }
        let push = real::cuCtxPushCurrent_v2()?;
        let Floating(ctx) = {
            let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            let at = ready.iter().position(|(d, _)| *d == dev)?;
            ready.swap_remove(at).1
        };
        // SAFETY: a live context this process created and no one else holds.
        (unsafe { push(ctx) } == CUresult::CUDA_SUCCESS).then_some(ctx)
    }

    /// Pops `ctx` if it is current on the calling thread, then destroys it on the reaper
    /// thread. Returns `false` when the context is not one the reaper can take (the caller then
    /// destroys it synchronously, which also reports an invalid handle properly).
    pub fn destroy_behind(&self, ctx: CUcontext) -> bool {
        let (Some(current), Some(pop), Some(flags)) = (
            real::cuCtxGetCurrent(),
            real::cuCtxPopCurrent_v2(),
            real::cuCtxGetFlags(),
        ) else {
            return false;
        };
        let mut cur: CUcontext = std::ptr::null_mut();
        // SAFETY: out-pointer to a live local.
        unsafe { current(&mut cur) };
        if cur != ctx {
            // Only the common case (destroying the current context) is deferred: a context
            // current elsewhere, or an invalid handle, goes the synchronous way.
            return false;
        }
        let mut f = 0u32;
        // SAFETY: `cur` is the calling thread's current context; out-pointer to a live local.
        if unsafe { flags(&mut f) } != CUresult::CUDA_SUCCESS {
            return false;
        }
        let mut popped: CUcontext = std::ptr::null_mut();
        // SAFETY: `ctx` is current on this thread.
        unsafe { pop(&mut popped) };
        let mut reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
        if reaper.is_none() {
            let (tx, rx) = mpsc::channel::<Floating>();
            let spawned = std::thread::Builder::new()
                .name("vgpu-ctx-reaper".into())
                .spawn(move || {
                    for Floating(ctx) in rx {
                        if let Some(destroy) = real::cuCtxDestroy_v2() {
                            // SAFETY: popped from its thread; the guest gave up the handle.
                            unsafe { destroy(ctx) };
                        }
                    }
                });
            if spawned.is_err() {
                return false;
            }
            *reaper = Some(tx);
        }
        reaper
            .as_ref()
            .is_some_and(|tx| tx.send(Floating(ctx)).is_ok())
    }
}
