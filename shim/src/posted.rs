//! Posted (fire-and-forget) calls: which calls may be posted, whether posting is on
//! (`VGPU_ASYNC`), and the per-thread counts that order one thread's calls after another
//! thread's posted ones.
//!
//! A posted call is sent without waiting for the host (see [`crate::channel::ThreadChannel::post`])
//! and returns `CUDA_SUCCESS`; the host runs the calls of a channel in order, and the first
//! failure among them answers this thread's next synchronous call instead of running it. Only
//! calls that enqueue GPU work and whose only output is the `CUresult` are posted, once the guest
//! has validated what it can and copied every input into the request.
//!
//! Across threads: when thread A posts a launch and then, through the application's own
//! synchronisation, thread B synchronises the stream, B's request must not run on the host before
//! A's launch. Each thread that posts has a [`Poster`] (its thread id and how many calls it
//! posted / knows to have run); while any other thread has posted calls not yet confirmed by one
//! of its own responses, every request carries marks "after `count` posted calls of thread `tid`"
//! and the host waits for them ([`protocol::frame::FLAG_AFTER_POSTS`]). With one posting thread,
//! that costs one atomic load per call.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::PostMark;

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Whether posting is on: `UNKNOWN` until the first call reads `VGPU_ASYNC`.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether a `VGPU_ASYNC` value turns posting on: anything but `0`, `off`, `false` or `no`
/// (unset: on).
pub fn parse_enabled(value: Option<&std::ffi::OsStr>) -> bool {
    !value.and_then(|v| v.to_str()).is_some_and(|v| {
        let v = v.trim();
        v == "0"
            || v.eq_ignore_ascii_case("off")
            || v.eq_ignore_ascii_case("false")
            || v.eq_ignore_ascii_case("no")
    })
}

/// Whether calls may be posted (`VGPU_ASYNC`, read at the first call that asks).
#[inline]
pub fn enabled() -> bool {
    // No ordering needed: the state only moves from UNKNOWN to a value computed from the
    // environment, the same in every racing initialiser.
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = parse_enabled(std::env::var_os("VGPU_ASYNC").as_deref());
            // No ordering needed: see above.
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// Every call's posting policy, indexed by wire call id, from the call table
/// (`shim-macros/src/calls.rs`, `Posted`): [`ALWAYS`] for generated forwarders that only enqueue
/// work on a stream, take values only and return nothing but the `CUresult` (event records and
/// waits, graph launches, device-to-device copies, asynchronous frees); [`WHEN_ALLOWED`] for
/// generated forwarders posted only inside [`allowing`], where their guest half decides:
/// - the memsets (`handlers/memset.rs`), which know whether the destination is device memory
///   (posted) or pinned host memory (synchronous, as in CUDA);
/// - function and kernel attribute sets (`handlers/cached.rs`): they return nothing but the
///   result. A posted set's value is not kept as an answer (a get after it asks the host, which
///   reports the set's failure there); it only lets an identical repeated set be skipped. cuDNN
///   sets one on every kernel it compiles per decoded token; asked synchronously, each waited
///   behind the token's launches (78 µs on average on the H200).
///
/// [`BY_HANDLER`] calls (launches, stream-ordered copies) are posted by their hand-written halves.
/// The host refuses a posted request for a call whose policy is [`NEVER`].
pub const POLICY: [u8; crate::EXPORTED_FUNCTIONS.len()] = shim_macros::posted_policies!();
/// Never posted.
pub const NEVER: u8 = 0;
/// Posted whenever posting is on.
pub const ALWAYS: u8 = 1;
/// Posted inside [`allowing`].
pub const WHEN_ALLOWED: u8 = 2;
/// Posted by its hand-written guest half.
pub const BY_HANDLER: u8 = 3;

/// The posting policy of call `id`.
#[inline]
pub fn policy(id: u32) -> u8 {
    POLICY.get(id as usize).copied().unwrap_or(NEVER)
}

thread_local! {
    /// Set by [`allowing`] around one forwarder call.
    static ALLOWED: Cell<bool> = const { Cell::new(false) };
    /// Set when this thread's last call was posted, for the trace line.
    static JUST_POSTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (one generated memset forwarder) with posting allowed for it.
pub fn allowing<R>(f: impl FnOnce() -> R) -> R {
    let _ = ALLOWED.try_with(|a| a.set(true));
    let r = f();
    let _ = ALLOWED.try_with(|a| a.set(false));
    r
}

/// Whether the generated forwarder with call id `id` may post now.
pub fn forwarder_may_post(id: u32) -> bool {
    match policy(id) {
        ALWAYS => enabled(),
        WHEN_ALLOWED => enabled() && ALLOWED.try_with(Cell::get).unwrap_or(false),
        _ => false,
    }
}

/// Notes that this thread's current call was posted (the trace shows `-> posted`).
pub fn note_posted() {
    let _ = JUST_POSTED.try_with(|p| p.set(true));
}

/// Whether this thread's current call has been posted so far (the note stays for the trace).
pub fn posted_so_far() -> bool {
    JUST_POSTED.try_with(Cell::get).unwrap_or(false)
}

/// Whether this thread's call that just ended was posted; clears the note.
pub fn take_posted_note() -> bool {
    JUST_POSTED.try_with(|p| p.replace(false)).unwrap_or(false)
}

/// One channel's posting counts. Only its owning thread changes them; other threads read them to
/// build marks.
#[derive(Debug)]
pub struct Poster {
    tid: u32,
    /// Calls posted on the channel.
    posted: AtomicU64,
    /// Posted calls known to have run: all that were posted before the channel's last response.
    confirmed: AtomicU64,
}

/// Every channel that posted, and how many of them have posted calls not yet confirmed.
static POSTERS: Mutex<Vec<Arc<Poster>>> = Mutex::new(Vec::new());
static UNCONFIRMED: AtomicUsize = AtomicUsize::new(0);

fn posters() -> MutexGuard<'static, Vec<Arc<Poster>>> {
    POSTERS.lock().unwrap_or_else(|e| e.into_inner())
}

impl Poster {
    /// Registers a channel of guest thread `tid` (the id its handshake gave the host).
    pub fn register(tid: u32) -> Arc<Self> {
        let poster = Arc::new(Self {
            tid,
            posted: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
        });
        posters().push(poster.clone());
        poster
    }

    fn unconfirmed(&self) -> bool {
        // Relaxed: both are written only by this poster's own thread, which is the caller.
        self.posted.load(Ordering::Relaxed) > self.confirmed.load(Ordering::Relaxed)
    }

    /// Counts one call posted (after it was sent).
    pub fn posted_one(&self) {
        if !self.unconfirmed() {
            // SeqCst: a thread that later (by the application's synchronisation) reads 0 here
            // must have no posted call of ours to wait for.
            UNCONFIRMED.fetch_add(1, Ordering::SeqCst);
        }
        // Release: pairs with the Acquire load in `marks`.
        self.posted.fetch_add(1, Ordering::Release);
    }

    /// A response arrived on the channel: every call posted before it has run.
    pub fn confirm(&self) {
        if self.unconfirmed() {
            // Release: pairs with the Acquire load in `marks`.
            self.confirmed
                .store(self.posted.load(Ordering::Relaxed), Ordering::Release);
            UNCONFIRMED.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether calls posted on this channel wait for a response (a flush is due at its end).
    pub fn has_unconfirmed(&self) -> bool {
        self.unconfirmed()
    }

    /// Removes the channel from the registry (it ended).
    pub fn retire(self: &Arc<Self>) {
        if self.unconfirmed() {
            UNCONFIRMED.fetch_sub(1, Ordering::SeqCst);
        }
        posters().retain(|p| !Arc::ptr_eq(p, self));
    }
}

/// The marks a request of the channel `own` must carry: one per other channel with posted
/// calls not yet confirmed. Empty (one atomic load) when there are none.
pub fn marks(own: Option<&Arc<Poster>>) -> Vec<PostMark> {
    let own_unconfirmed = own.is_some_and(|p| p.unconfirmed());
    // SeqCst: pairs with the updates in `posted_one` / `confirm` / `retire`.
    if UNCONFIRMED.load(Ordering::SeqCst) <= usize::from(own_unconfirmed) {
        return Vec::new();
    }
    posters()
        .iter()
        .filter(|p| own.is_none_or(|own| !Arc::ptr_eq(p, own)))
        .filter_map(|p| {
            // Acquire: pairs with the Release updates of the owning thread.
            let posted = p.posted.load(Ordering::Acquire);
            (posted > p.confirmed.load(Ordering::Acquire)).then_some(PostMark {
                tid: p.tid,
                count: posted,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_turns_posting_off_only_when_asked() {
        assert!(parse_enabled(None));
        assert!(parse_enabled(Some("1".as_ref())));
        assert!(parse_enabled(Some("".as_ref())));
        for off in ["0", "off", "OFF", "false", "no", " 0 "] {
            assert!(!parse_enabled(Some(off.as_ref())), "{off}");
        }
    }

    #[test]
    fn the_allow_lists_name_calls_with_values_only() {
        // Memsets are posted only inside `allowing`; the rest whenever posting is on.
        let memset = shim_macros::cuda_call_id!(cuMemsetD32Async);
        let record = shim_macros::cuda_call_id!(cuEventRecord);
        let sync = shim_macros::cuda_call_id!(cuStreamSynchronize);
        if enabled() {
            assert!(forwarder_may_post(record));
            assert!(!forwarder_may_post(memset));
            assert!(allowing(|| forwarder_may_post(memset)));
            assert!(!forwarder_may_post(memset));
        }
        assert!(!forwarder_may_post(sync));
        assert!(!allowing(|| forwarder_may_post(sync)));
        let mut posted = 0;
        for (id, name) in crate::EXPORTED_FUNCTIONS.iter().enumerate() {
            if policy(id as u32) != NEVER {
                posted += 1;
                assert!(
                    !name.contains("Synchronize") && !name.contains("Query"),
                    "{name}"
                );
            }
        }
        assert!(posted > 30, "only {posted} calls may be posted");
        assert_eq!(
            policy(shim_macros::cuda_call_id!(cuLaunchKernel)),
            BY_HANDLER
        );
    }

    #[test]
    fn marks_name_other_threads_with_unconfirmed_posts() {
        // Runs on its own: other tests of this crate do not post.
        let a = Poster::register(1001);
        let b = Poster::register(1002);
        assert!(marks(Some(&a)).is_empty());
        b.posted_one();
        b.posted_one();
        assert!(
            marks(Some(&b)).is_empty(),
            "own posts are ordered by the channel"
        );
        assert_eq!(
            marks(Some(&a)),
            vec![PostMark {
                tid: 1002,
                count: 2
            }]
        );
        a.posted_one();
        assert_eq!(marks(None).len(), 2);
        b.confirm();
        assert_eq!(
            marks(None),
            vec![PostMark {
                tid: 1001,
                count: 1
            }]
        );
        assert!(marks(Some(&a)).is_empty());
        a.retire();
        b.retire();
        assert!(marks(None).is_empty());
    }
}
