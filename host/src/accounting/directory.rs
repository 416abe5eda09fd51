//! The tenant's process list: the region's clients (guest pid, device memory held), written by
//! the supervisor after every turn of its loop and read by the workers of region clients to
//! answer `special::NVML_PROCESSES` (the guest's `nvmlDeviceGetComputeRunningProcesses`).
//!
//! One memfd, created and mapped read-write by the supervisor, then sealed (no new writable
//! mapping, no resize) and handed to every worker it starts (`--directory-fd N`), which maps it
//! read-only. A worker whose client reaches the host over TCP (another tenant) unmaps it before
//! it serves anything. Readers and the one writer meet in a sequence lock, every word atomic.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::SharedError;

/// `"VGPUDIR1"` little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"VGPUDIR1");
/// Most rows a directory holds (the supervisor's `--max-clients` bounds it lower).
pub const MAX_ROWS: usize = 4096;
/// How often a reader tries before it gives up on a directory being rewritten.
const READ_TRIES: usize = 1000;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Even when the rows are consistent, odd while the writer changes them.
    seq: AtomicU64,
    /// Rows in use.
    count: AtomicU64,
    /// Rows the mapping holds.
    capacity: AtomicU64,
}

#[repr(C)]
struct Row {
    pid: AtomicU64,
    bytes: AtomicU64,
}

fn mapping_len(capacity: usize) -> usize {
    let raw = std::mem::size_of::<Header>() + capacity * std::mem::size_of::<Row>();
    raw.div_ceil(4096) * 4096
}

/// A mapping of a directory (read-write for the supervisor, read-only for a worker).
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics (`Header` and `Row` fields).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, prot: libc::c_int) -> Result<Self, SharedError> {
        // SAFETY: a new shared mapping of `len` bytes of an open file at least that long (the
        // caller checked or made it so); the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SharedError::Map(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast()).ok_or(SharedError::Map(std::io::Error::other(
            "mmap returned NULL",
        )))?;
        Ok(Self { base, len })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is page aligned and at least a header long; all fields atomic.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// Row `i` (`i` below the mapping's capacity).
    fn row(&self, i: usize) -> &Row {
        let offset = std::mem::size_of::<Header>() + i * std::mem::size_of::<Row>();
        assert!(
            offset + std::mem::size_of::<Row>() <= self.len,
            "row out of range"
        );
        // SAFETY: inside the mapping (checked), 8-byte aligned; all fields atomic.
        unsafe { &*self.base.as_ptr().add(offset).cast::<Row>() }
    }

    fn capacity(&self) -> usize {
        (self.len - std::mem::size_of::<Header>()) / std::mem::size_of::<Row>()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The supervisor's side: the one writer.
#[derive(Debug)]
pub struct DirectoryWriter {
    map: Mapping,
    fd: OwnedFd,
}

impl DirectoryWriter {
    /// A directory of `capacity` rows (at most [`MAX_ROWS`]), sealed.
    ///
    /// # Errors
    /// [`SharedError`] when the memfd cannot be made, sized, mapped or sealed.
    pub fn create(capacity: usize) -> Result<Self, SharedError> {
        let capacity = capacity.clamp(1, MAX_ROWS);
        let len = mapping_len(capacity);
        // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
        let raw = unsafe {
            libc::memfd_create(
                c"vgpu-directory".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(SharedError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own open memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(SharedError::Seal(std::io::Error::last_os_error()));
        }
        let map = Mapping::new(&fd, len, libc::PROT_READ | libc::PROT_WRITE)?;
        // No one maps it writable from now on (F_SEAL_FUTURE_WRITE, Linux 5.1), nor resizes it.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE;
        // SAFETY: fcntl on our own open memfd.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals | libc::F_SEAL_SEAL) } != 0
        {
            return Err(SharedError::Seal(std::io::Error::last_os_error()));
        }
        let h = map.header();
        // SYNC POINT: Relaxed: written before any worker exists; the workers inherit the
        // memfd after `fork`, which orders these stores before their loads.
        h.capacity.store(map.capacity() as u64, Ordering::Relaxed);
        // SYNC POINT: as above.
        h.magic.store(MAGIC, Ordering::Relaxed);
        Ok(Self { map, fd })
    }

    /// The descriptor workers get (`--directory-fd`).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Replaces the rows with `rows` (pid, bytes); rows past the capacity are left out.
    pub fn publish(&self, rows: &[(u32, u64)]) {
        let h = self.map.header();
        let n = rows.len().min(self.map.capacity());
        // SYNC POINT: the odd sequence tells readers a write is under way; the Release fence
        // orders it before the row stores below (pairs with the reader's Acquire fence before
        // its second load of `seq`).
        let seq = h.seq.load(Ordering::Relaxed);
        // SYNC POINT: as above.
        h.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, (pid, bytes)) in rows[..n].iter().enumerate() {
            let row = self.map.row(i);
            // SYNC POINT: Relaxed row stores, ordered for readers by the seq protocol.
            row.pid.store(u64::from(*pid), Ordering::Relaxed);
            // SYNC POINT: as above.
            row.bytes.store(*bytes, Ordering::Relaxed);
        }
        // SYNC POINT: as above.
        h.count.store(n as u64, Ordering::Relaxed);
        // SYNC POINT: Release: pairs with the reader's Acquire load of `seq`; a reader that
        // sees this even value sees every row stored before it.
        h.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// A worker's read-only view.
#[derive(Debug)]
pub struct DirectoryView {
    map: Mapping,
}

impl DirectoryView {
    /// Maps the directory the supervisor handed over (the descriptor is closed after mapping).
    ///
    /// # Errors
    /// [`SharedError`] when `fd` is not a directory or cannot be mapped.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SharedError> {
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `st` a live, writable stat.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(SharedError::Map(std::io::Error::last_os_error()));
        }
        let len = st.st_size as usize;
        if len < mapping_len(1) || len > mapping_len(MAX_ROWS) || !len.is_multiple_of(4096) {
            return Err(SharedError::Size(st.st_size as u64));
        }
        let map = Mapping::new(&fd, len, libc::PROT_READ)?;
        // SYNC POINT: Relaxed: set before this process was started (see `create`).
        if map.header().magic.load(Ordering::Relaxed) != MAGIC {
            return Err(SharedError::Size(st.st_size as u64));
        }
        Ok(Self { map })
    }

    /// The rows (pid, bytes) as last published; `None` when every try met a write under way.
    pub fn read(&self) -> Option<Vec<(u32, u64)>> {
        let h = self.map.header();
        for _ in 0..READ_TRIES {
            // SYNC POINT: Acquire: pairs with the writer's Release store of an even `seq`.
            let before = h.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // SYNC POINT: Relaxed loads of the count and rows, validated by `seq` below.
            let n = (h.count.load(Ordering::Relaxed) as usize).min(self.map.capacity());
            let rows: Vec<(u32, u64)> = (0..n)
                .map(|i| {
                    let row = self.map.row(i);
                    // SYNC POINT: as above.
                    let pid = row.pid.load(Ordering::Relaxed) as u32;
                    // SYNC POINT: as above.
                    (pid, row.bytes.load(Ordering::Relaxed))
                })
                .collect();
            // SYNC POINT: Acquire fence: pairs with the writer's Release fence after its odd
            // store; the second load then sees any write that overlapped the row loads.
            fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) == before {
                return Some(rows);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(w: &DirectoryWriter) -> DirectoryView {
        // SAFETY: dup of an open descriptor gives a new one owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::dup(w.fd().as_raw_fd())) };
        DirectoryView::from_fd(fd).expect("map")
    }

    #[test]
    fn readers_see_whole_publications() {
        let w = DirectoryWriter::create(64).expect("create");
        let v = view_of(&w);
        assert_eq!(v.read(), Some(vec![]));
        w.publish(&[(7, 5 << 20), (9, 0)]);
        assert_eq!(v.read(), Some(vec![(7, 5 << 20), (9, 0)]));
        w.publish(&[(9, 1)]);
        assert_eq!(v.read(), Some(vec![(9, 1)]));
        // Sealed: no writable mapping for anyone else.
        let fd = w.fd();
        // SAFETY: a mapping attempt that must fail; nothing is mapped on failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_eq!(p, libc::MAP_FAILED);
    }

    #[test]
    fn a_reader_racing_the_writer_never_sees_a_torn_list() {
        let w = std::sync::Arc::new(DirectoryWriter::create(16).expect("create"));
        let v = view_of(&w);
        let writer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    // Every row of publication i holds i.
                    let n = (i % 16) as usize;
                    let rows: Vec<(u32, u64)> = (0..n).map(|_| (i as u32, i)).collect();
                    w.publish(&rows);
                }
            })
        };
        while !writer.is_finished() {
            if let Some(rows) = v.read() {
                if let Some(&(pid, bytes)) = rows.first() {
                    assert!(rows.iter().all(|&r| r == (pid, bytes)), "torn: {rows:?}");
                    assert_eq!(rows.len() as u64, bytes % 16);
                }
            }
        }
        writer.join().unwrap();
    }
}
