//! Managed memory in the shared region becomes a forked child's private copy.
//!
//! Managed memory over the region is a `MAP_SHARED` mapping of bulk blocks
//! (`handlers/zero_copy.rs`), which `fork` would share between parent and child: the child
//! would see the parent's writes, and the parent the child's, while the child's worker (another
//! one) knows nothing of the blocks. So a `pthread_atfork` child handler replaces each tracked
//! range, in the child only, with private anonymous pages holding the same bytes, before the
//! child runs any of its own code: the child keeps a plain copy, as it keeps plain copies of
//! mirrored memory (`mirror.rs`), and the parent's pages are untouched.
//!
//! The handler runs in the child of a possibly multi-threaded parent, so it takes no Rust lock
//! and allocates nothing: the ranges are guarded by a `pthread_mutex_t` that the prepare handler
//! locks and the parent and child handlers unlock (no other thread can hold it across `fork`).

use std::cell::UnsafeCell;
use std::sync::Once;

/// The tracked ranges (address, length), guarded by `lock`.
struct Ranges {
    lock: UnsafeCell<libc::pthread_mutex_t>,
    ranges: UnsafeCell<Vec<(usize, usize)>>,
}

// SAFETY: every access to the cells goes through `with_ranges` or the fork handlers, which hold
// `lock`.
unsafe impl Sync for Ranges {}

static RANGES: Ranges = Ranges {
    lock: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    ranges: UnsafeCell::new(Vec::new()),
};

/// Runs `f` on the ranges with the lock held.
fn with_ranges<R>(f: impl FnOnce(&mut Vec<(usize, usize)>) -> R) -> R {
    // SAFETY: a statically initialised mutex, never moved.
    unsafe { libc::pthread_mutex_lock(RANGES.lock.get()) };
    // SAFETY: the lock is held, so no one else touches the vector.
    let r = f(unsafe { &mut *RANGES.ranges.get() });
    // SAFETY: locked just above by this thread.
    unsafe { libc::pthread_mutex_unlock(RANGES.lock.get()) };
    r
}

extern "C" fn prepare() {
    // SAFETY: a statically initialised mutex; `parent`/`child` unlock it.
    unsafe { libc::pthread_mutex_lock(RANGES.lock.get()) };
}

extern "C" fn parent() {
    // SAFETY: locked by `prepare` in this thread.
    unsafe { libc::pthread_mutex_unlock(RANGES.lock.get()) };
}

extern "C" fn child() {
    // SAFETY: `prepare` locked the mutex before the fork, so the vector is stable and this
    // thread (the only one in the child) has it to itself.
    let ranges = unsafe { &mut *RANGES.ranges.get() };
    for &(at, len) in ranges.iter() {
        privatise(at, len);
    }
    // Clearing keeps the allocation: nothing is freed here.
    ranges.clear();
    // SAFETY: locked by `prepare` in the thread that forked, which is this one in the child.
    unsafe { libc::pthread_mutex_unlock(RANGES.lock.get()) };
}

/// Replaces the shared mapping `[at, at + len)` with private anonymous pages of the same
/// content. On failure the range stays shared (nothing better is possible in a fork handler).
fn privatise(at: usize, len: usize) {
    // SAFETY: a fresh anonymous mapping, anywhere.
    let copy = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if copy == libc::MAP_FAILED {
        return;
    }
    // SAFETY: `at` is a tracked mapping of `len` readable bytes (untracked before it is
    // unmapped); `copy` was just mapped with `len` bytes; they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(at as *const u8, copy.cast::<u8>(), len) };
    // SAFETY: moves our own fresh mapping over the tracked range, which in this child belongs to
    // nothing but this process's view of the region (MREMAP_FIXED unmaps it first).
    let moved = unsafe {
        libc::mremap(
            copy,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            at as *mut libc::c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        // SAFETY: our own mapping, which did not move.
        unsafe { libc::munmap(copy, len) };
    }
}

/// Tracks `[at, at + len)`, a shared mapping that a forked child must not share.
pub(crate) fn track(at: usize, len: usize) {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that live as long as the
        // library (the shim is never unloaded: it is the process's libcuda.so.1).
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            crate::log::log!(
                crate::log::Level::Warn,
                "pthread_atfork failed ({rc}): a forked child would share managed memory with its parent"
            );
        }
    });
    with_ranges(|ranges| ranges.push((at, len)));
}

/// Stops tracking the range starting at `at`.
pub(crate) fn untrack(at: usize) {
    with_ranges(|ranges| ranges.retain(|&(a, _)| a != at));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_gets_a_private_copy_of_a_tracked_range() {
        let len = 2 * 4096;
        // SAFETY: a fresh shared anonymous mapping owned by this test.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED);
        let at = shared as usize;
        // SAFETY: our own mapping of `len` bytes.
        unsafe { std::ptr::write_bytes(shared.cast::<u8>(), 0x5a, len) };
        track(at, len);
        // SAFETY: the child only touches the range and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // The child handler has run: the bytes are here, and a write stays here.
            // SAFETY: the range is mapped (privately now) for `len` bytes.
            let ok = unsafe { (at as *const u8).add(len - 1).read() } == 0x5a;
            // SAFETY: as above.
            unsafe { (at as *mut u8).write(0x11) };
            let forgotten = with_ranges(|r| r.is_empty());
            // SAFETY: `_exit` ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok && forgotten { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        untrack(at);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // SAFETY: our own mapping.
        let first = unsafe { (at as *const u8).read() };
        assert_eq!(first, 0x5a, "the child's write stayed in the child");
        assert!(!with_ranges(|r| r.contains(&(at, len))));
        // SAFETY: our own mapping, no longer tracked.
        unsafe { libc::munmap(shared, len) };
    }
}
