//! Host callbacks (`cuLaunchHostFunc`, `cuStreamAddCallback`) run in the guest process.
//!
//! The host registers its own trampoline with the real driver. When the stream reaches it, the
//! trampoline queues the guest's function pointer and blocks (so the stream waits, as CUDA
//! requires) until the guest's callback thread reports it ran. That thread sits in a
//! `CALLBACK_NEXT` call on its own channel: "I finished id N; give me the next one".

use std::collections::{HashSet, VecDeque};
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cuda_headers::{CUresult, CUstream};
use protocol::{DecodeError, Decoder, ResponseHeader};

/// How often a wait on the queue wakes by itself to look again, in case a notification was
/// missed; waits never end on this timeout alone.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Kinds of callback, as sent to the guest.
pub const KIND_HOST_FN: u8 = 0;
/// `cuStreamAddCallback`'s `(stream, status, data)` form.
pub const KIND_STREAM_CALLBACK: u8 = 1;

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    kind: u8,
    func: u64,
    data: u64,
    stream: u64,
    status: u32,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: VecDeque<Pending>,
    done: HashSet<u64>,
}

/// The callbacks of one guest process.
#[derive(Default)]
pub struct CallbackQueue {
    state: Mutex<State>,
    changed: Condvar,
}

/// What the driver hands back to a trampoline.
struct Ticket {
    queue: Arc<CallbackQueue>,
    kind: u8,
    func: u64,
    data: u64,
}

impl CallbackQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `userData` for a trampoline that will run guest function `func` with `data`.
    /// The ticket is freed by the trampoline when it runs.
    pub fn ticket(self: &Arc<Self>, kind: u8, func: u64, data: u64) -> *mut c_void {
        Box::into_raw(Box::new(Ticket {
            queue: Arc::clone(self),
            kind,
            func,
            data,
        }))
        .cast()
    }

    /// Frees a ticket the driver never took (the registration failed).
    ///
    /// # Safety
    /// `ticket` came from [`CallbackQueue::ticket`] and was not handed to a trampoline.
    pub unsafe fn forget_ticket(ticket: *mut c_void) {
        // SAFETY: per the contract, we own the box.
        drop(unsafe { Box::from_raw(ticket.cast::<Ticket>()) });
    }

    fn run_in_guest(&self, kind: u8, func: u64, data: u64, stream: u64, status: u32) {
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.pending.push_back(Pending {
                id,
                kind,
                func,
                data,
                stream,
                status,
            });
            id
        };
        self.changed.notify_all();
        let mut state = self.lock();
        while !state.done.remove(&id) {
            state = self
                .changed
                .wait_timeout(state, RECHECK_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// `CALLBACK_NEXT`: records the guest's finished callback, then waits for the next one.
    ///
    /// # Errors
    /// A malformed request.
    pub fn next(&self, dec: &mut Decoder<'_>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let finished: u64 = dec.get()?;
        dec.finish()?;
        let mut state = self.lock();
        if finished != 0 {
            state.done.insert(finished);
            self.changed.notify_all();
        }
        let next = loop {
            if let Some(next) = state.pending.pop_front() {
                break next;
            }
            state = self
                .changed
                .wait_timeout(state, RECHECK_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(state);
        let mut enc = ResponseHeader::start(out, 0);
        enc.put(next.id);
        enc.put(next.kind);
        enc.put(next.func);
        enc.put(next.data);
        enc.put(next.stream);
        enc.put(next.status);
        Ok(())
    }
}

/// The trampoline given to the real `cuLaunchHostFunc`.
pub extern "C" fn host_fn_trampoline(user: *mut c_void) {
    // SAFETY: `user` is a ticket made by `CallbackQueue::ticket`, given to the driver once, and
    // the driver calls the host function once.
    let ticket = unsafe { Box::from_raw(user.cast::<Ticket>()) };
    let _ = std::panic::catch_unwind(|| {
        ticket
            .queue
            .run_in_guest(ticket.kind, ticket.func, ticket.data, 0, 0)
    });
}

/// Makes the `userData` for [`graph_host_fn_trampoline`]: a graph host node runs each time a
/// graph executes, so this ticket is never freed (the driver gives no word when the last graph
/// or executable graph holding the node is destroyed). It costs a few dozen bytes per node.
pub fn persistent_ticket(queue: &Arc<CallbackQueue>, func: u64, data: u64) -> *mut c_void {
    queue.ticket(KIND_HOST_FN, func, data)
}

/// The guest function and data behind a ticket from [`persistent_ticket`].
///
/// # Safety
/// `ticket` came from [`persistent_ticket`] in this process.
pub unsafe fn ticket_target(ticket: *mut c_void) -> (u64, u64) {
    // SAFETY: per the contract, a live, never-freed ticket.
    let ticket = unsafe { &*ticket.cast::<Ticket>() };
    (ticket.func, ticket.data)
}

/// The host function of graph host nodes: runs the guest's function every time, keeping the
/// ticket.
pub extern "C" fn graph_host_fn_trampoline(user: *mut c_void) {
    // SAFETY: `user` is a ticket from `persistent_ticket`, never freed.
    let ticket = unsafe { &*user.cast::<Ticket>() };
    let _ = std::panic::catch_unwind(|| {
        ticket
            .queue
            .run_in_guest(ticket.kind, ticket.func, ticket.data, 0, 0)
    });
}

/// The trampoline given to the real `cuStreamAddCallback`.
pub extern "C" fn stream_callback_trampoline(
    stream: CUstream,
    status: CUresult,
    user: *mut c_void,
) {
    // SAFETY: as for `host_fn_trampoline`.
    let ticket = unsafe { Box::from_raw(user.cast::<Ticket>()) };
    let _ = std::panic::catch_unwind(|| {
        ticket.queue.run_in_guest(
            ticket.kind,
            ticket.func,
            ticket.data,
            stream as u64,
            status.0,
        )
    });
}
