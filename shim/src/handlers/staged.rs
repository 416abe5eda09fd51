//! Large copies between pageable guest memory and the GPU, pipelined through zero-copy staging
//! buffers: what the native driver does with its own pinned staging, with the shared region's
//! zero-copy blocks (`zero_copy.rs`) as the staging.
//!
//! A host-to-device copy of `len ≥ MIN_STAGED` bytes is cut into [`CHUNK`]-byte chunks. Each
//! chunk is copied by the guest into one of the [`DEPTH`] slots of a staging buffer, then a
//! posted `cuMemcpyAsync` from the slot's device alias to the destination and a posted
//! `cuEventRecord` of the slot's event go to the host: the GPU reads the slot while the guest
//! fills the next. A slot is filled again only after its event completed (one synchronous
//! `cuEventSynchronize`, usually answered at once). Device-to-host runs the other way: the host
//! copies up to `DEPTH` chunks into the slots, and the guest waits for each chunk's event, copies
//! it out and has the slot refilled with the chunk `DEPTH` further on.
//!
//! Ordering is the stream's: every chunk is a stream-ordered copy on the caller's stream, posted
//! in the caller's order with the rest of its work. Semantics are the driver's for pageable
//! memory: an asynchronous host-to-device copy returns once the source has been read (staged);
//! the synchronous one returns after the last chunk's event; device-to-host copies return once
//! the destination holds the bytes. An error of a posted chunk is reported by the next
//! synchronous call, which is the copy's own event wait: the copy returns it.
//!
//! Chunks move between the application's memory and the slots with streaming stores
//! (`streaming_copy.rs`): the slot is read next by the GPU, and a large download is read by the
//! application much later, so neither wants the bytes to pass through the cache.
//!
//! Staging buffers (`CHUNK × DEPTH` bytes and `DEPTH` events each) belong to a context, since
//! events do; they are kept in a per-process pool and taken by one copy at a time, so threads
//! never share one concurrently. Without a region (TCP), with `VGPU_ZERO_COPY=0`, without a
//! current context, or when no block can be placed, the caller's unstaged path runs instead.

use std::collections::HashMap;
use std::sync::Mutex;

use cuda_headers::*;

use crate::forward::{generated, post};
use crate::handlers::cached::current_context;
use crate::handlers::zero_copy;
use crate::streaming_copy;

/// Bytes per chunk.
pub(crate) const CHUNK: usize = 2 << 20;
/// Slots per staging buffer: how many chunks can be in flight.
pub(crate) const DEPTH: usize = 4;
/// Copies smaller than this travel with their request (a round trip costs less than staging).
pub(crate) const MIN_STAGED: usize = 256 << 10;
/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_FLAGS: u32 = 0x2;

/// One staging buffer: `DEPTH` slots of `CHUNK` bytes in a zero-copy block, an event per slot.
#[derive(Debug)]
struct Staging {
    /// Guest address of slot 0.
    guest: usize,
    /// Device alias of slot 0.
    alias: u64,
    events: [u64; DEPTH],
    /// Whether a slot's event was recorded after its last use and not yet waited for.
    pending: [bool; DEPTH],
    /// The slot the next chunk goes to.
    next: usize,
}

impl Staging {
    /// A new buffer in the current context; `None` when no zero-copy block can be placed. What a
    /// failure leaves half made (the block, earlier events) is given back.
    fn create() -> CuResult<Option<Self>> {
        let Ok(ptr) = zero_copy::alloc(CHUNK * DEPTH, 0) else {
            return Ok(None);
        };
        let Some(resolved) = zero_copy::resolve(ptr as u64, CHUNK * DEPTH) else {
            zero_copy::free(ptr as usize);
            return Ok(None);
        };
        let mut events = [0u64; DEPTH];
        for i in 0..DEPTH {
            let mut e: CUevent = std::ptr::null_mut();
            // SAFETY: `e` is valid for one write.
            if let Err(err) = unsafe { generated::cuEventCreate(&mut e, EVENT_FLAGS) } {
                for made in &events[..i] {
                    // SAFETY: an event created above and used by nothing yet.
                    let _ = unsafe { generated::cuEventDestroy_v2(*made as CUevent) };
                }
                zero_copy::free(ptr as usize);
                return Err(err);
            }
            events[i] = e as u64;
        }
        Ok(Some(Staging {
            guest: ptr as usize,
            alias: resolved.alias,
            events,
            pending: [false; DEPTH],
            next: 0,
        }))
    }

    /// Waits until slot `s` is free (its last chunk's event completed).
    fn wait(&mut self, s: usize) -> CuResult {
        if self.pending[s] {
            self.pending[s] = false;
            // SAFETY: an event this buffer created.
            unsafe { generated::cuEventSynchronize(self.events[s] as CUevent) }?;
        }
        Ok(())
    }

    /// Takes the next slot, waiting for it to be free.
    fn take_slot(&mut self) -> CuResult<usize> {
        let s = self.next;
        self.next = (s + 1) % DEPTH;
        self.wait(s)?;
        Ok(s)
    }

    fn slot_guest(&self, s: usize) -> *mut u8 {
        (self.guest + s * CHUNK) as *mut u8
    }

    fn slot_alias(&self, s: usize) -> u64 {
        self.alias + (s * CHUNK) as u64
    }

    /// Records slot `s`'s event on `stream` (posted).
    fn record(&mut self, s: usize, stream: CUstream, per_thread: bool) -> CuResult {
        let event = self.events[s] as CUevent;
        // SAFETY: an event of this buffer's context and the caller's stream.
        unsafe {
            if per_thread {
                generated::cuEventRecord_ptsz(event, stream)
            } else {
                generated::cuEventRecord(event, stream)
            }
        }?;
        self.pending[s] = true;
        Ok(())
    }

    /// Waits for every slot.
    fn drain(&mut self) -> CuResult {
        (0..DEPTH).try_for_each(|s| self.wait(s))
    }
}

/// Free staging buffers by context, and the process they belong to.
#[derive(Debug, Default)]
struct Pool {
    pid: u32,
    free: HashMap<u64, Vec<Staging>>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The pool of this process: a forked child starts with none (its parent's blocks and events
/// belong to the parent's client and worker; the child's copies would be refused with them).
fn pool() -> std::sync::MutexGuard<'static, Option<Pool>> {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if guard.as_ref().is_none_or(|p| p.pid != pid) {
        if let Some(stale) = guard.take() {
            // The parent's; nothing here may free or use it.
            std::mem::forget(stale);
        }
        *guard = Some(Pool {
            pid,
            free: HashMap::new(),
        });
    }
    guard
}

/// Runs `copy` with a staging buffer of the current context, returned to the pool afterwards;
/// `Ok(None)` when there is none to be had (the caller copies unstaged).
fn with_staging(copy: impl FnOnce(&mut Staging) -> CuResult) -> CuResult<Option<()>> {
    let Ok(ctx) = current_context() else {
        return Ok(None);
    };
    if ctx.is_null() {
        return Ok(None);
    }
    let ctx = ctx as u64;
    let taken = pool()
        .as_mut()
        .and_then(|p| p.free.get_mut(&ctx))
        .and_then(Vec::pop);
    let mut staging = match taken {
        Some(s) => s,
        None => match Staging::create()? {
            Some(s) => s,
            None => return Ok(None),
        },
    };
    let result = copy(&mut staging);
    if let Some(p) = pool().as_mut() {
        p.free.entry(ctx).or_default().push(staging);
    }
    result.map(Some)
}

/// Posts one stream-ordered copy between GPU-visible addresses (`cuMemcpyAsync` or its
/// per-thread form, as `memory::copy_on_host` encodes it).
fn post_copy(dst: u64, src: u64, len: usize, stream: CUstream, per_thread: bool) -> CuResult {
    let id = if per_thread {
        shim_macros::cuda_call_id!(cuMemcpyAsync_ptsz)
    } else {
        shim_macros::cuda_call_id!(cuMemcpyAsync)
    };
    post(id, |enc| {
        enc.put(dst);
        enc.put(src);
        enc.put(len as u64);
        enc.put(stream as u64);
    })
}

/// Host-to-device: `src` to device address `dst` on `stream`; with `synchronous`, returns only
/// once the last chunk has reached the device. `Ok(false)`: not staged, copy it another way.
///
/// # Errors
/// A chunk's or an event's failure, from the host.
pub(crate) fn htod(
    dst: u64,
    src: &[u8],
    stream: CUstream,
    per_thread: bool,
    synchronous: bool,
) -> CuResult<bool> {
    let staged = with_staging(|st| {
        for (k, chunk) in src.chunks(CHUNK).enumerate() {
            let s = st.take_slot()?;
            // SAFETY: the slot holds CHUNK ≥ chunk.len() bytes of this process's zero-copy
            // block, which no one else writes while this copy holds the buffer and the slot's
            // previous chunk has been read (its event completed); `chunk` is the caller's. The
            // copy's closing fence orders its stores before the post below.
            unsafe { streaming_copy::copy(st.slot_guest(s), chunk.as_ptr(), chunk.len()) };
            post_copy(
                dst + (k * CHUNK) as u64,
                st.slot_alias(s),
                chunk.len(),
                stream,
                per_thread,
            )?;
            st.record(s, stream, per_thread)?;
        }
        if synchronous {
            st.drain()?;
        }
        Ok(())
    })?;
    Ok(staged.is_some())
}

/// Device-to-host: `dst.len()` bytes from device address `src` on `stream` into `dst`, complete
/// when it returns. `Ok(false)`: not staged, copy it another way.
///
/// # Errors
/// A chunk's or an event's failure, from the host.
pub(crate) fn dtoh(dst: &mut [u8], src: u64, stream: CUstream, per_thread: bool) -> CuResult<bool> {
    let staged = with_staging(|st| {
        let total = dst.len();
        let chunks = total.div_ceil(CHUNK);
        let len_of = |k: usize| CHUNK.min(total - k * CHUNK);
        let mut slots = Vec::with_capacity(chunks);
        let start = |st: &mut Staging, k: usize| -> CuResult<usize> {
            let s = st.take_slot()?;
            post_copy(
                st.slot_alias(s),
                src + (k * CHUNK) as u64,
                len_of(k),
                stream,
                per_thread,
            )?;
            st.record(s, stream, per_thread)?;
            Ok(s)
        };
        for k in 0..chunks.min(DEPTH) {
            slots.push(start(st, k)?);
        }
        for k in 0..chunks {
            let s = slots[k];
            st.wait(s)?;
            let n = len_of(k);
            // SAFETY: the slot's chunk has landed (its event completed) and holds `n ≤ CHUNK`
            // bytes; `dst[k * CHUNK..][..n]` is the caller's.
            unsafe { streaming_copy::copy(dst.as_mut_ptr().add(k * CHUNK), st.slot_guest(s), n) };
            if k + DEPTH < chunks {
                slots.push(start(st, k + DEPTH)?);
            }
        }
        Ok(())
    })?;
    Ok(staged.is_some())
}
