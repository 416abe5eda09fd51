//! Answers the guest can give itself: values of the driver's state that only this process's own
//! calls change, kept after their first answer from the host so that a steady decode step makes
//! no round trip for them (`handlers/cached.rs` holds the exported functions that use them).
//!
//! What is kept, per thread, and what makes it stale:
//!
//! | value | key | stale after |
//! |---|---|---|
//! | the current context (`cuCtxGetCurrent`) | — | any [context-state call](changes_context_state) on any thread |
//! | a context's device (`cuCtxGetDevice(_v2)`) | context | the same |
//! | primary-context state (`cuDevicePrimaryCtxGetState`) | device | the same |
//! | a kernel's function in a context (`cuKernelGetFunction`) | kernel, context | the same, and any module or library unload |
//! | function and kernel attributes (`cu{Func,Kernel}GetAttribute`) | handle, attribute, device | the same, any unload, and any forwarded attribute or cache-config set |
//! | device attributes (`cuDeviceGetAttribute`) | attribute, device | never (a device's attributes are fixed) |
//!
//! The worker serving this process is its own, so only this process's calls change these values:
//! every exported function named by [`changes_context_state`] bumps the context epoch once it
//! has run (the stub template does it, `crate::stub`), as does cudart's primary-context retain
//! in its export table. An unload (`cuModuleUnload`, `cuLibraryUnload`) bumps the code epoch
//! instead: handles of unloaded code may be reused for new code, but contexts are untouched
//! (cuDNN unloads a library on every decoded token). A set of an attribute to the value the
//! cache already holds changes nothing and is answered here; any other set is forwarded and
//! bumps the attribute epoch.
//! Entries are tagged with the epochs read *before* the host was asked, so an answer that raced
//! with a change is never kept.
//!
//! Two things differ from asking the host each time, both documented in docs/shim.md: a deferred
//! error of a posted call is reported by the next call that does reach the host rather than by a
//! cached query, and a lost host is still reported at once (cached answers check it first).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped after every call that may change a context binding, a context's life, primary-context
/// state, flags or limits.
static CONTEXT_EPOCH: AtomicU64 = AtomicU64::new(0);
/// Bumped after every module or library unload: the functions and kernels a context holds.
static CODE_EPOCH: AtomicU64 = AtomicU64::new(0);
/// Bumped after every forwarded set of a function or kernel attribute or cache configuration.
static ATTRIBUTE_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Exported functions after which the context epoch is bumped: they create, destroy, bind or
/// unbind contexts, or change primary-context state, flags or limits. Evaluated at compile time
/// by the stub template, so other functions pay nothing. (Unloads bump the code epoch, from
/// their handlers: [`code_unloaded`].)
pub const fn changes_context_state(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "cuCtxAttach",
        "cuCtxCreate",
        "cuCtxCreate_v2",
        "cuCtxCreate_v3",
        "cuCtxCreate_v4",
        "cuCtxDestroy",
        "cuCtxDestroy_v2",
        "cuCtxDetach",
        "cuCtxFromGreenCtx",
        "cuCtxPopCurrent",
        "cuCtxPopCurrent_v2",
        "cuCtxPushCurrent",
        "cuCtxPushCurrent_v2",
        "cuCtxSetCacheConfig",
        "cuCtxSetCurrent",
        "cuCtxSetFlags",
        "cuCtxSetLimit",
        "cuCtxSetSharedMemConfig",
        "cuDevicePrimaryCtxRelease",
        "cuDevicePrimaryCtxRelease_v2",
        "cuDevicePrimaryCtxReset",
        "cuDevicePrimaryCtxReset_v2",
        "cuDevicePrimaryCtxRetain",
        "cuDevicePrimaryCtxSetFlags",
        "cuDevicePrimaryCtxSetFlags_v2",
        "cuGreenCtxCreate",
        "cuGreenCtxDestroy",
    ];
    let mut i = 0;
    while i < NAMES.len() {
        if str_eq(NAMES[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Marks every kept context-derived value stale (see the table above).
pub fn context_state_changed() {
    // SYNC POINT: pairs with the loads in `Cache::current_epochs`. Relaxed suffices: an
    // application that orders this call before another thread's query does so through its own
    // synchronisation, which carries this store with it; unordered threads race in CUDA too.
    CONTEXT_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Marks kept answers about functions and kernels stale (a module or library was unloaded: its
/// handles may come back for other code).
pub fn code_unloaded() {
    // SYNC POINT: pairs with the loads in `Epochs::now`; Relaxed as in `context_state_changed`.
    CODE_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Marks every kept function and kernel attribute stale.
pub fn attributes_changed() {
    // SYNC POINT: pairs with the loads in `Cache::current_epochs`; Relaxed as above.
    ATTRIBUTE_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The epochs a value read from the host now is tagged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    context: u64,
    code: u64,
    attribute: u64,
}

impl Epochs {
    /// Reads both epochs: take them before asking the host.
    pub fn now() -> Self {
        Epochs {
            // SYNC POINT: pairs with the fetch_add in `context_state_changed`.
            context: CONTEXT_EPOCH.load(Ordering::Relaxed),
            // SYNC POINT: pairs with the fetch_add in `code_unloaded`.
            code: CODE_EPOCH.load(Ordering::Relaxed),
            // SYNC POINT: pairs with the fetch_add in `attributes_changed`.
            attribute: ATTRIBUTE_EPOCH.load(Ordering::Relaxed),
        }
    }
}

/// Which handle an attribute entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handle {
    /// A `CUfunction`.
    Function(u64),
    /// A `CUkernel` (with the device the attribute is asked for).
    Kernel(u64, i32),
}

/// One thread's kept values, valid while the epochs they were read under are current.
#[derive(Debug, Default)]
struct Cache {
    epochs: Option<Epochs>,
    /// `Some(ctx)` once known; `ctx` may be 0 (no current context).
    current: Option<u64>,
    ctx_device: HashMap<u64, i32>,
    primary: HashMap<i32, (u32, i32)>,
    kernel_function: HashMap<(u64, u64), u64>,
    /// The current context's limits.
    limits: HashMap<i32, usize>,
    attributes: HashMap<(Handle, i32), i32>,
    /// Values of posted attribute sets: not answers, only what an identical set may skip.
    posted_sets: HashMap<(Handle, i32), i32>,
    device_attributes: HashMap<(i32, i32), i32>,
}

impl Cache {
    /// Drops what the epochs made stale and records `now` as the epochs of what is kept.
    fn refresh(&mut self, now: Epochs) {
        let Some(seen) = self.epochs else {
            self.epochs = Some(now);
            return;
        };
        if seen.context != now.context {
            self.current = None;
            self.ctx_device.clear();
            self.primary.clear();
            self.kernel_function.clear();
            self.limits.clear();
            self.attributes.clear();
            self.posted_sets.clear();
        } else if seen.code != now.code {
            self.kernel_function.clear();
            self.attributes.clear();
            self.posted_sets.clear();
        } else if seen.attribute != now.attribute {
            self.attributes.clear();
            self.posted_sets.clear();
        }
        self.epochs = Some(now);
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Runs `f` on this thread's cache brought up to date; `None` when the thread's storage is gone
/// (a call from a thread-local destructor) or the cache is in use (a re-entrant call).
fn with<R>(f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    let now = Epochs::now();
    CACHE
        .try_with(|c| {
            c.try_borrow_mut().ok().map(|mut c| {
                c.refresh(now);
                f(&mut c)
            })
        })
        .ok()
        .flatten()
}

/// Stores a value read from the host under `read` (the epochs taken before asking), unless
/// something changed since.
fn keep(read: Epochs, f: impl FnOnce(&mut Cache)) {
    let _ = with(|c| {
        if c.epochs == Some(read) {
            f(c);
        }
    });
}

/// The current context, if known.
pub fn current() -> Option<u64> {
    with(|c| c.current).flatten()
}

/// Keeps the current context read under `read`.
pub fn keep_current(read: Epochs, ctx: u64) {
    keep(read, |c| c.current = Some(ctx));
}

/// The device of context `ctx`, if known.
pub fn ctx_device(ctx: u64) -> Option<i32> {
    with(|c| c.ctx_device.get(&ctx).copied()).flatten()
}

/// Keeps the device of `ctx`.
pub fn keep_ctx_device(read: Epochs, ctx: u64, dev: i32) {
    keep(read, |c| {
        c.ctx_device.insert(ctx, dev);
    });
}

/// `(flags, active)` of `dev`'s primary context, if known.
pub fn primary_state(dev: i32) -> Option<(u32, i32)> {
    with(|c| c.primary.get(&dev).copied()).flatten()
}

/// Keeps the primary-context state of `dev`.
pub fn keep_primary_state(read: Epochs, dev: i32, state: (u32, i32)) {
    keep(read, |c| {
        c.primary.insert(dev, state);
    });
}

/// The function of `kernel` in context `ctx`, if known.
pub fn kernel_function(kernel: u64, ctx: u64) -> Option<u64> {
    with(|c| c.kernel_function.get(&(kernel, ctx)).copied()).flatten()
}

/// Keeps the function of `kernel` in `ctx`.
pub fn keep_kernel_function(read: Epochs, kernel: u64, ctx: u64, function: u64) {
    keep(read, |c| {
        c.kernel_function.insert((kernel, ctx), function);
    });
}

/// A limit of the current context, if known.
pub fn limit(limit: i32) -> Option<usize> {
    with(|c| c.limits.get(&limit).copied()).flatten()
}

/// Keeps a limit of the current context (stale with the context epoch: a context switch or a
/// `cuCtxSetLimit` moves it).
pub fn keep_limit(read: Epochs, limit: i32, value: usize) {
    keep(read, |c| {
        c.limits.insert(limit, value);
    });
}

/// A function or kernel attribute, if known.
pub fn attribute(handle: Handle, attribute: i32) -> Option<i32> {
    with(|c| c.attributes.get(&(handle, attribute)).copied()).flatten()
}

/// Keeps a function or kernel attribute.
pub fn keep_attribute(read: Epochs, handle: Handle, attribute: i32, value: i32) {
    keep(read, |c| {
        c.attributes.insert((handle, attribute), value);
    });
}

/// The value of this thread's last posted set of an attribute, if no change came since.
pub fn posted_set(handle: Handle, attribute: i32) -> Option<i32> {
    with(|c| c.posted_sets.get(&(handle, attribute)).copied()).flatten()
}

/// Records a posted set (after the epoch bump it caused, under `read`).
pub fn keep_posted_set(read: Epochs, handle: Handle, attribute: i32, value: i32) {
    keep(read, |c| {
        c.posted_sets.insert((handle, attribute), value);
    });
}

/// A device attribute, if known.
pub fn device_attribute(attribute: i32, dev: i32) -> Option<i32> {
    with(|c| c.device_attributes.get(&(attribute, dev)).copied()).flatten()
}

/// Keeps a device attribute (fixed for the device's life: no epoch applies).
pub fn keep_device_attribute(attribute: i32, dev: i32, value: i32) {
    let _ = with(|c| {
        c.device_attributes.insert((attribute, dev), value);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_evaluated_at_compile_time_and_exact() {
        const { assert!(changes_context_state("cuCtxSetCurrent")) };
        const { assert!(!changes_context_state("cuCtxGetCurrent")) };
        assert!(!changes_context_state("cuCtxSetCurren"));
        assert!(!changes_context_state("cuCtxSetCurrent_"));
        assert!(!changes_context_state("cuModuleUnload"));
    }

    #[test]
    fn every_listed_name_is_an_exported_function() {
        for name in [
            "cuCtxAttach",
            "cuCtxSetLimit",
            "cuDevicePrimaryCtxRetain",
            "cuGreenCtxCreate",
        ] {
            assert!(crate::EXPORTED_FUNCTIONS.contains(&name), "{name}");
        }
    }

    /// Runs `f` on a fresh thread, so that this test's thread-local cache is its own. The epochs
    /// are global: tests that keep values run one at a time, so that no other test's bump lands
    /// between a keep and its check.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(f).join().expect("test thread");
    }

    #[test]
    fn values_are_kept_until_their_epoch_moves() {
        on_fresh_thread(|| {
            let read = Epochs::now();
            keep_current(read, 0xc0);
            keep_ctx_device(read, 0xc0, 2);
            keep_primary_state(read, 2, (4, 1));
            keep_kernel_function(read, 0x1, 0xc0, 0xf1);
            keep_attribute(read, Handle::Kernel(0x1, 2), 8, 49152);
            keep_device_attribute(75, 2, 9);
            assert_eq!(current(), Some(0xc0));
            assert_eq!(ctx_device(0xc0), Some(2));
            assert_eq!(primary_state(2), Some((4, 1)));
            assert_eq!(kernel_function(0x1, 0xc0), Some(0xf1));
            assert_eq!(attribute(Handle::Kernel(0x1, 2), 8), Some(49152));

            attributes_changed();
            assert_eq!(attribute(Handle::Kernel(0x1, 2), 8), None);
            assert_eq!(current(), Some(0xc0), "an attribute set keeps contexts");
            assert_eq!(kernel_function(0x1, 0xc0), Some(0xf1));

            let read = Epochs::now();
            keep_attribute(read, Handle::Kernel(0x1, 2), 8, 49152);
            code_unloaded();
            assert_eq!(attribute(Handle::Kernel(0x1, 2), 8), None);
            assert_eq!(
                kernel_function(0x1, 0xc0),
                None,
                "an unloaded kernel's handle may return"
            );
            assert_eq!(current(), Some(0xc0), "an unload keeps contexts");
            assert_eq!(ctx_device(0xc0), Some(2));
            assert_eq!(primary_state(2), Some((4, 1)));
            keep_kernel_function(Epochs::now(), 0x1, 0xc0, 0xf1);

            context_state_changed();
            assert_eq!(current(), None);
            assert_eq!(ctx_device(0xc0), None);
            assert_eq!(primary_state(2), None);
            assert_eq!(kernel_function(0x1, 0xc0), None);
            assert_eq!(
                device_attribute(75, 2),
                Some(9),
                "device attributes are fixed"
            );
        });
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept() {
        on_fresh_thread(|| {
            let read = Epochs::now();
            // Another thread changes the state while this one waits for the host.
            std::thread::spawn(context_state_changed).join().unwrap();
            keep_current(read, 0xc1);
            assert_eq!(current(), None);
            let read = Epochs::now();
            keep_current(read, 0xc1);
            assert_eq!(current(), Some(0xc1));
        });
    }

    #[test]
    fn another_threads_change_reaches_this_thread() {
        on_fresh_thread(|| {
            let read = Epochs::now();
            keep_primary_state(read, 0, (0, 0));
            assert_eq!(primary_state(0), Some((0, 0)));
            std::thread::spawn(context_state_changed).join().unwrap();
            assert_eq!(primary_state(0), None);
        });
    }
}
