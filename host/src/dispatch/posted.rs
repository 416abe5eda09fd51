//! Posted calls on the host (see `docs/transport.md`, "Posted calls").
//!
//! A posted request ([`protocol::frame::FLAG_NO_REPLY`]) runs like any other, in order on its
//! channel's thread, but gets no response. Two things are kept for it:
//!
//! - [`DeferredErrors`], per guest thread: the first failure among the posted calls since the
//!   last response. The next non-posted request is not run; it is answered with that error
//!   instead (CUDA reports asynchronous errors from a later call in the same way, and a call
//!   that fails has no effect), and the record is cleared.
//! - [`Progress`], per guest process: how many posted calls each guest thread's channel has
//!   executed. A request carrying post marks ([`protocol::frame::FLAG_AFTER_POSTS`]) waits until
//!   the named threads have executed that many, so a call that the guest ordered after another
//!   thread's posted call (through the application's own synchronisation) runs after it here
//!   too.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use protocol::{CallId, DeferredError, PostMark};

/// Every call's posting policy, indexed by wire call id, from the call table
/// (`shim-macros/src/calls.rs`); `0`: never posted.
const POLICY: &[u8] = &shim_macros::posted_policies!();

/// Whether call `call` may arrive posted. A guest that posts any other call (one with outputs,
/// which a posted request never gets back) is refused: the call does not run and its failure is
/// deferred like any posted call's.
pub fn may_be_posted(call: CallId) -> bool {
    POLICY.get(call.0 as usize).is_some_and(|&p| p != 0)
}

/// The first failed posted call since the last response, and how many failed after it.
#[derive(Debug, Default)]
pub struct DeferredErrors {
    first: Option<DeferredError>,
}

impl DeferredErrors {
    /// Records the result of one posted call (`0` is success and records nothing).
    pub fn note(&mut self, call: CallId, result: u32) {
        if result == 0 {
            return;
        }
        match &mut self.first {
            Some(first) => first.more = first.more.saturating_add(1),
            None => {
                self.first = Some(DeferredError {
                    result,
                    call,
                    more: 0,
                })
            }
        }
    }

    /// The error to answer the next non-posted call with, clearing the record.
    pub fn take(&mut self) -> Option<DeferredError> {
        self.first.take()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    session: u64,
    executed: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Guest thread id → its channel's session and posted calls executed.
    threads: HashMap<u32, Entry>,
    next_session: u64,
    waiters: usize,
}

/// Posted calls executed per guest thread of one client.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the channel of guest thread `tid` (at its handshake), replacing an earlier
    /// channel of the same thread id; returns the session number [`Progress::executed`] and
    /// [`Progress::end`] take.
    pub fn register(&self, tid: u32) -> u64 {
        let mut state = self.lock();
        state.next_session += 1;
        let session = state.next_session;
        state.threads.insert(
            tid,
            Entry {
                session,
                executed: 0,
            },
        );
        if state.waiters > 0 {
            self.changed.notify_all();
        }
        session
    }

    /// Records that the channel `session` of thread `tid` has executed `count` posted calls.
    pub fn executed(&self, tid: u32, session: u64, count: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.threads.get_mut(&tid) {
            if entry.session == session {
                entry.executed = count;
            }
        }
        if state.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// The channel `session` of thread `tid` ended: nothing waits for it any more.
    pub fn end(&self, tid: u32, session: u64) {
        let mut state = self.lock();
        if state
            .threads
            .get(&tid)
            .is_some_and(|e| e.session == session)
        {
            state.threads.remove(&tid);
        }
        if state.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits until every thread named in `marks` (other than `own_tid`) has executed its count
    /// of posted calls. A mark of a thread this client has no channel for, or whose channel ends
    /// or is replaced while waiting, is satisfied: a guest thread flushes its posted calls before
    /// its channel ends, and a dead guest has nobody left to order against.
    pub fn wait_for(&self, own_tid: Option<u32>, marks: &[PostMark]) {
        let mut state = self.lock();
        for mark in marks {
            if Some(mark.tid) == own_tid {
                continue;
            }
            let Some(session) = state.threads.get(&mark.tid).map(|e| e.session) else {
                continue;
            };
            loop {
                match state.threads.get(&mark.tid) {
                    Some(e) if e.session == session && e.executed < mark.count => {}
                    _ => break,
                }
                state.waiters += 1;
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                state.waiters -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn the_first_failure_is_kept_and_counted_until_taken() {
        let mut d = DeferredErrors::default();
        d.note(CallId(1), 0);
        assert_eq!(d.take(), None);
        d.note(CallId(2), 0);
        d.note(CallId(3), 700);
        d.note(CallId(4), 0);
        d.note(CallId(5), 1);
        d.note(CallId(6), 2);
        assert_eq!(
            d.take(),
            Some(DeferredError {
                result: 700,
                call: CallId(3),
                more: 2
            })
        );
        // Reported once.
        assert_eq!(d.take(), None);
        d.note(CallId(9), 98);
        assert_eq!(
            d.take().map(|e| (e.call, e.result, e.more)),
            Some((CallId(9), 98, 0))
        );
    }

    #[test]
    fn a_mark_waits_for_the_named_thread_only() {
        let p = Arc::new(Progress::default());
        let a = p.register(100);
        let b = p.register(200);
        // Own marks, unknown threads and reached counts never wait.
        p.wait_for(
            Some(200),
            &[
                PostMark {
                    tid: 200,
                    count: 99,
                },
                PostMark { tid: 300, count: 5 },
                PostMark { tid: 100, count: 0 },
            ],
        );
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || p.wait_for(Some(200), &[PostMark { tid: 100, count: 3 }]))
        };
        std::thread::sleep(Duration::from_millis(50));
        p.executed(100, a, 2);
        p.executed(200, b, 50);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "released before thread 100 got to 3");
        p.executed(100, a, 3);
        waiter.join().unwrap();
    }

    #[test]
    fn an_ended_or_replaced_channel_releases_its_waiters() {
        let p = Arc::new(Progress::default());
        let a = p.register(100);
        let spawn_waiter = |p: &Arc<Progress>| {
            let p = p.clone();
            std::thread::spawn(move || {
                p.wait_for(
                    None,
                    &[PostMark {
                        tid: 100,
                        count: 10,
                    }],
                )
            })
        };
        let waiter = spawn_waiter(&p);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished());
        p.end(100, a);
        waiter.join().unwrap();

        let old = p.register(100);
        let waiter = spawn_waiter(&p);
        std::thread::sleep(Duration::from_millis(30));
        let new = p.register(100);
        waiter.join().unwrap();
        // The old session's end does not remove the new one; its updates are ignored.
        p.end(100, old);
        p.executed(100, old, 99);
        let waiter = spawn_waiter(&p);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished());
        p.executed(100, new, 10);
        waiter.join().unwrap();
    }
}
