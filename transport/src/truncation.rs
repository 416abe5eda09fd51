//! Surviving a region file shrunk under its mappings (issue 11, class 6). A guest that can open
//! a region file can `ftruncate` it; every later access of the host to the lost pages then
//! raises `SIGBUS`, which would end the supervisor and every worker of the region.
//!
//! A process that calls [`protect`] (the host does, the guest shim never installs anything)
//! gets a `SIGBUS` handler. Every [`crate::sys::Mapping`] registers its range in a fixed table;
//! a fault inside a registered range replaces the whole range with private zero pages
//! (`mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)`, async-signal-safe) and marks the mapping
//! truncated, so the faulting access is retried on zeros and the transport then reports
//! [`crate::GoneReason::RegionTruncated`] from its next liveness check instead of trusting what
//! it reads. A fault outside every registered range is passed to the handler that was there
//! before, or ends the process as it would have.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings a process can protect at once; beyond them a mapping is simply unprotected.
const SLOTS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicUsize = AtomicUsize::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const CLEAN: AtomicBool = AtomicBool::new(false);
/// First byte of each registered mapping (0 = free slot).
static BASES: [AtomicUsize; SLOTS] = [FREE; SLOTS];
/// Length of each registered mapping.
static LENS: [AtomicUsize; SLOTS] = [FREE; SLOTS];
/// Whether each registered mapping was replaced after a fault.
static TRUNCATED: [AtomicBool; SLOTS] = [CLEAN; SLOTS];
/// The `SIGBUS` disposition before [`protect`], for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping's slot in the table.
#[derive(Debug)]
pub(crate) struct Slot(Option<usize>);

/// Registers `[base, base + len)`; a full table leaves the mapping unprotected.
pub(crate) fn register(base: usize, len: usize) -> Slot {
    for i in 0..SLOTS {
        // SYNC POINT: the length is stored before the base is published (Release below), and the
        // handler loads the base with Acquire before the length.
        if BASES[i].load(Ordering::Relaxed) == 0 {
            LENS[i].store(len, Ordering::Relaxed);
            TRUNCATED[i].store(false, Ordering::Relaxed);
            // SYNC POINT: pairs with the Acquire load of `BASES[i]` in `on_sigbus`.
            if BASES[i]
                .compare_exchange(0, base, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return Slot(Some(i));
            }
        }
    }
    Slot(None)
}

impl Slot {
    /// No slot: an unprotected mapping.
    pub(crate) fn none() -> Self {
        Slot(None)
    }

    /// Whether a fault replaced this mapping with zero pages.
    pub(crate) fn truncated(&self) -> bool {
        // SYNC POINT: pairs with the Release store in `on_sigbus`.
        self.0.is_some_and(|i| TRUNCATED[i].load(Ordering::Acquire))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            // SYNC POINT: Release, so that the slot's next owner stores its length after this;
            // the mapping is unmapped only after this store (the caller drops the slot first).
            BASES[i].store(0, Ordering::Release);
        }
    }
}

/// Installs the `SIGBUS` handler, once per process.
///
/// # Errors
/// The OS error of `sigaction`.
pub fn protect() -> std::io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: sigaction is plain data; all-zero is a valid starting value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is a valid sigset_t owned by `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: as above.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both structs are valid for the call; the handler only makes async-signal-safe
        // calls (mmap, sigaction, raise) and atomic accesses.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, &mut previous) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = PREVIOUS.set(previous);
        Ok(())
    });
    installed.map_err(std::io::Error::from_raw_os_error)
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for i in 0..SLOTS {
        // SYNC POINT: pairs with the Release CAS in `register`.
        let base = BASES[i].load(Ordering::Acquire);
        let len = LENS[i].load(Ordering::Relaxed);
        if base == 0 || addr < base || addr - base >= len {
            continue;
        }
        // SAFETY: `[base, base + len)` is this process's own registered mapping; replacing it
        // with private zero pages of the same size keeps every pointer into it valid.
        let replaced = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if replaced != libc::MAP_FAILED {
            // SYNC POINT: pairs with the Acquire load in `Slot::truncated`.
            TRUNCATED[i].store(true, Ordering::Release);
            return;
        }
    }
    not_ours(signal, info, context);
}

/// A fault outside every region: the previous handler, or the default action (the process
/// ends, as without this module).
fn not_ours(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if let Some(previous) = PREVIOUS.get() {
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed for SIGBUS with SA_SIGINFO, so it
                // has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                f(signal, info, context);
            } else {
                // SAFETY: installed without SA_SIGINFO: the one-argument form.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                f(signal);
            }
            return;
        }
    }
    // SAFETY: sigaction is plain data; restoring the default and returning re-runs the faulting
    // access, which then ends the process with SIGBUS as it would have.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(signal, &default, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_truncated_file_under_a_mapping_turns_to_zeros_instead_of_sigbus() {
        protect().expect("handler");
        let path = std::env::temp_dir().join(format!("vgpu-truncation-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("file");
        file.write_all(&[7u8; 8192]).expect("write");
        let map = crate::sys::Mapping::map(&file, 8192).expect("map");
        // SAFETY: the mapping is 8192 bytes long.
        assert_eq!(unsafe { map.base().add(4096).read_volatile() }, 7);
        assert!(!map.truncated());
        file.set_len(0).expect("truncate");
        // SAFETY: as above; the page is gone from the file, so this read faults once.
        assert_eq!(unsafe { map.base().add(4096).read_volatile() }, 0);
        assert!(map.truncated());
        // SAFETY: as above; the replacement is writable private memory.
        unsafe { map.base().write_volatile(1) };
        drop(map);
        let _ = std::fs::remove_file(&path);
    }
}
