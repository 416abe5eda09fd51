//! Where a worker's [`Counters`] live: one page of a sealed memfd that the supervisor creates,
//! maps read-only ([`CountersView`]) and hands to the worker it starts (`--stats-fd N`), which
//! maps it read-write ([`CountersHome::from_fd`]). Sealed against shrinking, so a worker cannot
//! make the supervisor's reads fault.

use std::ffi::CStr;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use super::counters::{Counters, Snapshot};

/// Bytes of the shared block (one page; the counters use less).
const BLOCK_LEN: usize = 4096;
const _: () = assert!(std::mem::size_of::<Counters>() <= BLOCK_LEN);

/// Why a counters block could not be made or mapped.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// `memfd_create` failed.
    #[error("cannot create the counters memfd: {0}")]
    Create(std::io::Error),
    /// Sizing or sealing it failed.
    #[error("cannot size or seal the counters memfd: {0}")]
    Seal(std::io::Error),
    /// The descriptor given is not a block of the right size.
    #[error("the counters descriptor holds {0} bytes, not {BLOCK_LEN}")]
    Size(u64),
    /// `fstat` or `mmap` failed.
    #[error("cannot map the counters block: {0}")]
    Map(std::io::Error),
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Maps the block of `fd` with `prot`.
fn map(fd: &OwnedFd, prot: libc::c_int) -> Result<NonNull<Counters>, SharedError> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a live, writable stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(SharedError::Map(last_error()));
    }
    if st.st_size as u64 != BLOCK_LEN as u64 {
        return Err(SharedError::Size(st.st_size as u64));
    }
    // SAFETY: a new shared mapping of BLOCK_LEN bytes of an open file of that size; the
    // kernel picks the address.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BLOCK_LEN,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(SharedError::Map(last_error()));
    }
    NonNull::new(ptr.cast()).ok_or_else(|| SharedError::Map(last_error()))
}

/// The supervisor's read-only view of one worker's counters.
#[derive(Debug)]
pub struct CountersView {
    ptr: NonNull<Counters>,
}

// SAFETY: the view only ever makes atomic loads through `ptr`, which stays mapped until drop.
unsafe impl Send for CountersView {}
// SAFETY: as above: shared access is atomic loads only.
unsafe impl Sync for CountersView {}

impl CountersView {
    /// Creates a sealed, zeroed block: the view and the descriptor to hand the worker.
    ///
    /// # Errors
    /// [`SharedError`] when the memfd cannot be made, sized, sealed or mapped.
    pub fn create() -> Result<(Self, OwnedFd), SharedError> {
        const NAME: &CStr = c"vgpu-counters";
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let raw = unsafe {
            libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(SharedError::Create(last_error()));
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate and fcntl on our own open memfd.
        let sized = unsafe { libc::ftruncate(fd.as_raw_fd(), BLOCK_LEN as libc::off_t) } == 0
            // SAFETY: as above.
            && unsafe {
                libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                )
            } == 0;
        if !sized {
            return Err(SharedError::Seal(last_error()));
        }
        let ptr = map(&fd, libc::PROT_READ)?;
        Ok((Self { ptr }, fd))
    }

    /// The worker's counters now (`None` before it marked them ready).
    pub fn snapshot(&self) -> Option<Snapshot> {
        // SAFETY: `ptr` is a live, page-aligned read-only mapping of a block of `Counters`
        // size or more; every field is an atomic, and `snapshot` only loads them (x86-64 and
        // aarch64 atomic loads of 64-bit words are plain loads, valid on read-only pages).
        unsafe { self.ptr.as_ref() }.snapshot()
    }
}

impl Drop for CountersView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once; no reference into it outlives
        // `self` (snapshots are copies).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), BLOCK_LEN) };
    }
}

/// Where a worker counts: the supervisor's shared block, or its own memory when it has none
/// (tests that run sessions in-process, a block that could not be mapped).
#[derive(Debug)]
pub enum CountersHome {
    /// The shared block, mapped for the life of the process.
    Shared(&'static Counters),
    /// Private memory, read by nobody else.
    Own(Box<Counters>),
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl CountersHome {
    /// Private counters, marked ready.
    pub fn own() -> Self {
        let counters = Box::new(Counters::zeroed());
        counters.mark_ready();
        Self::Own(counters)
    }

    /// Maps the block the supervisor handed over (the descriptor is closed after mapping) and
    /// marks it ready. The mapping stays for the life of the process.
    ///
    /// # Errors
    /// [`SharedError`] when `fd` is not a block of the right size or cannot be mapped.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SharedError> {
        let ptr = map(&fd, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: a live read-write shared mapping of BLOCK_LEN bytes, never unmapped (so
        // `'static`), page aligned; `Counters` is atomics only, valid for any bytes (zeros
        // from a fresh memfd), and other processes access it only atomically.
        let counters: &'static Counters = unsafe { ptr.as_ref() };
        counters.mark_ready();
        Ok(Self::Shared(counters))
    }
}

impl Deref for CountersHome {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        match self {
            Self::Shared(c) => c,
            Self::Own(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{Direction, Path};

    #[test]
    fn the_supervisor_reads_what_the_worker_counts() {
        let (view, fd) = CountersView::create().expect("create");
        assert_eq!(view.snapshot(), None);
        // SAFETY: `fd` is open; dup gives an independent descriptor for the "worker".
        let dup = unsafe { libc::dup(fd.as_raw_fd()) };
        assert!(dup >= 0);
        // SAFETY: `dup` is a new descriptor owned by nothing else.
        let worker = CountersHome::from_fd(unsafe { OwnedFd::from_raw_fd(dup) }).expect("map");
        worker.posted();
        worker.copied(Direction::HostToDevice, Path::ZeroCopy, 4096);
        let s = view.snapshot().expect("ready");
        assert_eq!(s.posted, 1);
        assert_eq!(s.copied[0][3], 4096);
        // Sealed: the block cannot be shrunk under the supervisor's reads.
        // SAFETY: ftruncate on an open descriptor; expected to fail.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
    }
}
