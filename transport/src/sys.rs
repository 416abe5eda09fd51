//! Thin wrappers over the Linux calls the transport needs: mmap, futex, thread ids, process identity.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A shared, writable mapping of a whole file; unmapped on drop. Registered with
/// [`crate::truncation`], so that where the process protects itself, a file shrunk under it
/// turns the mapping to zeros instead of raising `SIGBUS`.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    slot: crate::truncation::Slot,
}

// SAFETY: the mapping is plain shared memory; all concurrent access goes through atomics or is
// validated copying, so moving/sharing the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` with `MAP_SHARED` (required for ivshmem BARs and cross-process use).
    pub(crate) fn map(file: &File, len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "zero-length region",
            ));
        }
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        let slot = crate::truncation::register(base.as_ptr() as usize, len);
        Ok(Mapping { base, len, slot })
    }

    /// Whether the file was shrunk under the mapping and the mapping replaced by zeros (only in
    /// a process that called [`crate::truncation::protect`]).
    pub(crate) fn truncated(&self) -> bool {
        self.slot.truncated()
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Unregistered before the range is unmapped, so a later mapping at the same addresses is
        // never taken for this one.
        drop(std::mem::replace(
            &mut self.slot,
            crate::truncation::Slot::none(),
        ));
        // SAFETY: `base`/`len` come from a successful mmap that nothing else unmaps.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Sleeps on `word` while it equals `expected`, at most `timeout` (spurious returns are fine).
/// Uses the shared (not `FUTEX_PRIVATE`) futex so a waker in another process reaches us.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the timespec outlives it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every sleeper on `word` (in any process mapping the same page).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not dereference other arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// This kernel's boot id (a UUID, new on every boot, different in every VM), 0 when unknown.
pub(crate) fn boot_id() -> u128 {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| u128::from_str_radix(&s.trim().replace('-', ""), 16).ok())
        .unwrap_or(0)
}

/// Inode of this process's pid namespace (pids are only comparable within one), 0 when unknown.
pub(crate) fn pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// This process's id as last asked of the kernel; 0 = ask again. `GuestChannel::call` checks it on
/// every call (fork detection), and `getpid` is a real system call in glibc (~140 ns here, a third of
/// a round trip).
static CACHED_PID: AtomicU32 = AtomicU32::new(0);

/// Runs in the child of every `fork()` (registered with `pthread_atfork`): the child must ask again.
extern "C" fn forget_pid() {
    CACHED_PID.store(0, Ordering::Relaxed);
}

/// The calling process's id, cached. The cache is cleared in the child of `fork()` (a `pthread_atfork`
/// handler, registered before the first value is cached); a child made by a raw `clone` system call
/// without `CLONE_VM` would keep its parent's value.
pub(crate) fn pid() -> u32 {
    let cached = CACHED_PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a child handler that only stores to an atomic (async-signal-safe); no
        // prepare or parent handler.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
    });
    let pid = std::process::id();
    CACHED_PID.store(pid, Ordering::Relaxed);
    pid
}

/// The calling thread's kernel id.
pub(crate) fn tid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) and whether the process is a
/// zombie/dead. `None` when the process does not exist.
fn proc_stat(pid: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    // After the state come fields 4..; start time is field 22, i.e. the 19th after the state.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Start time of `pid`, 0 when unknown (used to tell a reused pid from the original process).
pub(crate) fn start_time(pid: u32) -> u64 {
    proc_stat(pid).map_or(0, |(start, _)| start)
}

/// Whether process `pid`, started at `start` (0 = don't compare), still runs on this kernel.
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return true;
    }
    match proc_stat(pid) {
        None => false,
        Some((_, true)) => false,
        Some((s, false)) => start == 0 || s == start,
    }
}
