//! Where image bytes come from: a bounded slice, or raw process memory.
//!
//! The format parsers read through [`Source`] only, so the same code sizes an image held in a
//! `&[u8]` window (every read bounds-checked) and an image in guest memory behind a raw pointer
//! (read incrementally, never further than the headers declare).

use crate::{ImageError, MAX_IMAGE_SIZE};

/// Random access to the bytes of one image, by offset from its first byte.
pub(crate) trait Source {
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    ///
    /// # Errors
    /// [`ImageError::Truncated`] when the range is not available, [`ImageError::TooLarge`] when it
    /// ends beyond [`MAX_IMAGE_SIZE`].
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError>;

    /// Like [`Source::read_at`], but for bytes past the end of what is known to belong to the
    /// image (looking for a chained fatbin): answers `false` instead of failing or faulting.
    fn probe_at(&self, offset: u64, buf: &mut [u8]) -> bool;

    /// Length of the NUL-terminated text starting at `offset`, NUL excluded.
    ///
    /// # Errors
    /// [`ImageError::Unterminated`] when no NUL is found within the window or the size limit.
    fn text_len_at(&self, offset: u64) -> Result<u64, ImageError>;
}

/// Checks that `offset..offset+len` stays below [`MAX_IMAGE_SIZE`], returning the end.
pub(crate) fn checked_end(offset: u64, len: u64) -> Result<u64, ImageError> {
    offset
        .checked_add(len)
        .filter(|end| *end <= MAX_IMAGE_SIZE)
        .ok_or(ImageError::TooLarge {
            field: "image extent",
            value: offset.saturating_add(len),
            limit: MAX_IMAGE_SIZE,
        })
}

/// Reads a little-endian `u16` at `offset`.
pub(crate) fn read_u16(src: &dyn Source, offset: u64) -> Result<u16, ImageError> {
    let mut b = [0u8; 2];
    src.read_at(offset, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// Reads a little-endian `u32` at `offset`.
pub(crate) fn read_u32(src: &dyn Source, offset: u64) -> Result<u32, ImageError> {
    let mut b = [0u8; 4];
    src.read_at(offset, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a little-endian `u64` at `offset`.
pub(crate) fn read_u64(src: &dyn Source, offset: u64) -> Result<u64, ImageError> {
    let mut b = [0u8; 8];
    src.read_at(offset, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// An image held in a slice: every read is bounds-checked.
pub(crate) struct SliceSource<'a> {
    bytes: &'a [u8],
}

impl<'a> SliceSource<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
}

impl Source for SliceSource<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let end = checked_end(offset, buf.len() as u64)?;
        let available = self.bytes.len() as u64;
        if end > available {
            return Err(ImageError::Truncated {
                offset,
                end,
                available,
            });
        }
        // Both bounds were checked against the slice length above, and fit in usize because
        // they are at most the slice length.
        buf.copy_from_slice(&self.bytes[offset as usize..end as usize]);
        Ok(())
    }

    fn probe_at(&self, offset: u64, buf: &mut [u8]) -> bool {
        self.read_at(offset, buf).is_ok()
    }

    fn text_len_at(&self, offset: u64) -> Result<u64, ImageError> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|s| *s <= self.bytes.len())
            .ok_or(ImageError::Unterminated { searched: 0 })?;
        let window = &self.bytes[start..];
        let limit = window.len().min(MAX_IMAGE_SIZE as usize);
        window[..limit]
            .iter()
            .position(|b| *b == 0)
            .map(|n| n as u64)
            .ok_or(ImageError::Unterminated {
                searched: limit as u64,
            })
    }
}

/// An image in this process's memory, behind a raw pointer.
///
/// Reads go through `process_vm_readv` on the own process, so a header that points at unmapped
/// memory gives [`ImageError::Unreadable`] instead of a fault. Where the kernel refuses that call
/// (a seccomp filter), reads fall back to plain copies, trusting the caller's contract.
pub(crate) struct MemorySource {
    base: *const u8,
}

/// Outcome of one read through the kernel.
enum KernelRead {
    /// This many bytes were read from the start of the range.
    Read(usize),
    /// The kernel does not offer the call here.
    Unavailable,
}

impl MemorySource {
    /// # Safety
    /// `base` must point to the first byte of a module image in readable memory, whose headers
    /// describe memory that is readable for as long as this source is used (the contract of
    /// [`crate::size_of_image_at`]).
    pub(crate) unsafe fn new(base: *const u8) -> Self {
        Self { base }
    }

    fn page_size() -> usize {
        // SAFETY: sysconf has no memory-safety preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(4096)
    }

    /// Reads `buf.len()` bytes at `offset` through the kernel, one remote iovec per page so
    /// that a partial read stops at the first unreadable page.
    fn read_via_kernel(&self, offset: u64, buf: &mut [u8]) -> KernelRead {
        const MAX_IOV: usize = 64;
        let page = Self::page_size();
        let start = (self.base as usize).wrapping_add(offset as usize);
        let mut done = 0usize;
        while done < buf.len() {
            let mut remote = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV];
            let mut count = 0usize;
            let mut planned = 0usize;
            while count < MAX_IOV && done + planned < buf.len() {
                let addr = start.wrapping_add(done + planned);
                let in_page = page - addr % page;
                let len = in_page.min(buf.len() - done - planned);
                remote[count] = libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len,
                };
                count += 1;
                planned += len;
            }
            let local = libc::iovec {
                iov_base: buf[done..].as_mut_ptr().cast(),
                iov_len: planned,
            };
            // SAFETY: `local` describes the unwritten tail of `buf`, writable for `planned`
            // bytes; the remote ranges are only read by the kernel, which reports unmapped
            // memory as EFAULT or a short count instead of faulting.
            let n = unsafe {
                libc::process_vm_readv(
                    libc::getpid(),
                    &local,
                    1,
                    remote.as_ptr(),
                    count as libc::c_ulong,
                    0,
                )
            };
            if n < 0 {
                let errno = std::io::Error::last_os_error().raw_os_error();
                if done == 0 && matches!(errno, Some(libc::ENOSYS) | Some(libc::EPERM)) {
                    return KernelRead::Unavailable;
                }
                return KernelRead::Read(done);
            }
            let n = n as usize;
            done += n;
            if n < planned {
                break;
            }
        }
        KernelRead::Read(done)
    }

    /// Whether one read of the first byte through the kernel succeeds.
    pub(crate) fn kernel_reads_work(&self) -> bool {
        matches!(self.read_via_kernel(0, &mut [0u8; 1]), KernelRead::Read(1))
    }

    /// Plain copy, for systems where the kernel read is unavailable.
    ///
    /// # Safety
    /// The range must be readable: the contract of [`MemorySource::new`].
    unsafe fn copy_direct(&self, offset: u64, buf: &mut [u8]) {
        // SAFETY: the caller guarantees the range is readable; `buf` is writable for its length
        // and cannot overlap guest image memory we only read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }
}

impl Source for MemorySource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let end = checked_end(offset, buf.len() as u64)?;
        match self.read_via_kernel(offset, buf) {
            KernelRead::Read(n) if n == buf.len() => Ok(()),
            KernelRead::Read(n) => Err(ImageError::Unreadable {
                offset: offset + n as u64,
                end,
            }),
            KernelRead::Unavailable => {
                // SAFETY: the parsers only read ranges the image's headers declare, which the
                // contract of `MemorySource::new` makes readable; `checked_end` bounded the range.
                unsafe { self.copy_direct(offset, buf) };
                Ok(())
            }
        }
    }

    fn probe_at(&self, offset: u64, buf: &mut [u8]) -> bool {
        if checked_end(offset, buf.len() as u64).is_err() {
            return false;
        }
        match self.read_via_kernel(offset, buf) {
            KernelRead::Read(n) => n == buf.len(),
            KernelRead::Unavailable => {
                // Without the kernel read, only a probe inside the page of the image's last
                // byte is known not to fault (protection is per page).
                let page = Self::page_size() as u64;
                let known = (self.base as u64).wrapping_add(offset.saturating_sub(1));
                let last = (self.base as u64).wrapping_add(offset + buf.len() as u64 - 1);
                if offset == 0 || buf.is_empty() || known / page != last / page {
                    return false;
                }
                // SAFETY: the range lies in the same page as a byte of the image, which the
                // contract makes readable, and page protection covers whole pages.
                unsafe { self.copy_direct(offset, buf) };
                true
            }
        }
    }

    fn text_len_at(&self, offset: u64) -> Result<u64, ImageError> {
        const CHUNK: usize = 64 * 1024;
        let mut chunk = vec![0u8; CHUNK];
        let mut searched = 0u64;
        while searched < MAX_IMAGE_SIZE {
            let at = offset + searched;
            let n = match self.read_via_kernel(at, &mut chunk) {
                KernelRead::Read(n) => n,
                KernelRead::Unavailable => {
                    // SAFETY: the contract of `MemorySource::new` makes the text a readable,
                    // NUL-terminated C string.
                    let len =
                        unsafe { std::ffi::CStr::from_ptr(self.base.add(offset as usize).cast()) }
                            .to_bytes()
                            .len() as u64;
                    return if len >= MAX_IMAGE_SIZE {
                        Err(ImageError::TooLarge {
                            field: "PTX length",
                            value: len,
                            limit: MAX_IMAGE_SIZE,
                        })
                    } else {
                        Ok(len)
                    };
                }
            };
            if let Some(pos) = chunk[..n].iter().position(|b| *b == 0) {
                return Ok(searched + pos as u64);
            }
            searched += n as u64;
            if n < CHUNK {
                return Err(ImageError::Unreadable {
                    offset: offset + searched,
                    end: offset + searched + 1,
                });
            }
        }
        Err(ImageError::Unterminated { searched })
    }
}
