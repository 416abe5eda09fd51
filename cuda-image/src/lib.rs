//! Identifies and sizes CUDA module images, so that a remoting shim can ship exactly their bytes.
//!
//! An application hands the driver a bare pointer (`cuModuleLoadData`, `cuModuleLoadDataEx`,
//! `cuModuleLoadFatBinary`, `cuLibraryLoadData`, or cudart's "module from fatbin wrapper"
//! export-table entry) and never a length. The length follows from the image's own headers:
//!
//! | kind | recognised by | size |
//! |---|---|---|
//! | fatbin wrapper | magic `0x466243B1`, version 1 or 2 | 24 bytes; it points at the fatbin to ship |
//! | fatbin | magic `0xBA55ED50` | header + files size, summed over containers laid back to back |
//! | ELF cubin | `\x7fELF` | furthest end of headers, tables, sections and segments |
//! | PTX | printable text | `strlen + 1` |
//!
//! The safe core works on `&[u8]` windows and never reads out of bounds; [`size_of_image_at`]
//! reads process memory incrementally through the same parsers. This crate knows nothing of
//! transport.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod elf;
mod error;
mod fatbin;
mod source;
mod wrapper;

pub use elf::ELF_MAGIC;
pub use error::ImageError;
pub use fatbin::{Compression, EntryKind, FatbinEntry, FATBIN_MAGIC, FLAG_LZ4, FLAG_ZSTD};
pub use wrapper::{FatbinWrapper, WRAPPER_LEN, WRAPPER_MAGIC};

use source::{MemorySource, SliceSource, Source};

/// Largest image accepted: 4 GiB. Any size or offset field beyond it is refused as absurd.
pub const MAX_IMAGE_SIZE: u64 = 4 << 30;

/// The format of a module image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// cudart's `__fatBinC_Wrapper_t`, which points at a fatbin.
    FatbinWrapper,
    /// One or more fatbin containers.
    Fatbin,
    /// A bare ELF cubin.
    Elf,
    /// NUL-terminated PTX text.
    Ptx,
}

/// The extent of one image in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    /// Its format.
    pub kind: ImageKind,
    /// Its exact length in bytes (for PTX, including the terminating NUL; for a wrapper, the
    /// wrapper struct alone).
    pub len: u64,
    /// For a fatbin, how many containers lie back to back; 0 for other kinds.
    pub fatbin_containers: usize,
}

/// What [`size_of_image_at`] found: the kind behind the pointer and the bytes to ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The kind of image the pointer pointed at.
    pub kind: ImageKind,
    /// The wrapper, when the pointer pointed at one.
    pub wrapper: Option<FatbinWrapper>,
    /// Address of the bytes to ship: the pointer itself, or a wrapper's inner fatbin.
    pub payload_addr: usize,
    /// The extent of the bytes to ship; its kind is never [`ImageKind::FatbinWrapper`].
    pub payload: ImageLayout,
}

impl ImageInfo {
    /// The bytes to ship, as a slice.
    ///
    /// # Safety
    /// The memory sized by [`size_of_image_at`] must still be mapped and unchanged for `'a`.
    pub unsafe fn payload_bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: `payload_addr..+len` was read successfully while sizing (len < 4 GiB fits in
        // usize on 64-bit); the caller guarantees it is still mapped and unchanged for 'a.
        unsafe {
            std::slice::from_raw_parts(self.payload_addr as *const u8, self.payload.len as usize)
        }
    }
}

fn identify_in(src: &dyn Source) -> Result<ImageKind, ImageError> {
    let mut first = [0u8; 1];
    src.read_at(0, &mut first)?;
    let mut magic = [0u8; 4];
    if src.probe_at(0, &mut magic) {
        match u32::from_le_bytes(magic) {
            WRAPPER_MAGIC => return Ok(ImageKind::FatbinWrapper),
            FATBIN_MAGIC => return Ok(ImageKind::Fatbin),
            ELF_MAGIC => return Ok(ImageKind::Elf),
            _ => {}
        }
    }
    if matches!(first[0], b'\t' | b'\n' | b'\r' | b' '..=b'~') {
        return Ok(ImageKind::Ptx);
    }
    Err(ImageError::UnknownFormat {
        first_bytes: u32::from_le_bytes(magic),
    })
}

fn layout_in(src: &dyn Source) -> Result<ImageLayout, ImageError> {
    let kind = identify_in(src)?;
    let (len, fatbin_containers) = match kind {
        ImageKind::FatbinWrapper => {
            wrapper::parse(src)?;
            (WRAPPER_LEN, 0)
        }
        ImageKind::Fatbin => fatbin::walk_chain(src, &mut |_| {})?,
        ImageKind::Elf => (elf::elf_len(src)?, 0),
        ImageKind::Ptx => (src.text_len_at(0)? + 1, 0),
    };
    // Headers may declare bytes no parser read (section contents, padding): the last byte of
    // the image must exist too.
    src.read_at(len - 1, &mut [0u8; 1])?;
    Ok(ImageLayout {
        kind,
        len,
        fatbin_containers,
    })
}

/// Names the format of the image at the start of `bytes`.
///
/// # Errors
/// [`ImageError::Truncated`] for an empty window, [`ImageError::UnknownFormat`] for bytes that
/// match no format.
pub fn identify(bytes: &[u8]) -> Result<ImageKind, ImageError> {
    identify_in(&SliceSource::new(bytes))
}

/// Sizes the image at the start of `bytes`; the window may be longer than the image.
///
/// A fatbin wrapper's size is that of the wrapper struct; its pointers cannot be followed
/// inside a window (use [`parse_wrapper`] or [`size_of_image_at`]).
///
/// # Errors
/// Any [`ImageError`]: unknown format, headers or payloads past the window, absurd fields.
pub fn size_of_image(bytes: &[u8]) -> Result<ImageLayout, ImageError> {
    layout_in(&SliceSource::new(bytes))
}

/// Parses the fatbin wrapper at the start of `bytes`.
///
/// # Errors
/// [`ImageError::UnknownFormat`] when the magic is not the wrapper's, [`ImageError::InvalidField`]
/// for a version other than 1 or 2, [`ImageError::Truncated`] for a short window.
pub fn parse_wrapper(bytes: &[u8]) -> Result<FatbinWrapper, ImageError> {
    wrapper::parse(&SliceSource::new(bytes))
}

/// Lists the entries of every container of the fatbin at the start of `bytes`, for logs.
///
/// # Errors
/// As [`size_of_image`]; [`ImageError::UnknownFormat`] when `bytes` is not a fatbin.
pub fn fatbin_entries(bytes: &[u8]) -> Result<Vec<FatbinEntry>, ImageError> {
    let mut entries = Vec::new();
    fatbin::walk_chain(&SliceSource::new(bytes), &mut |e| entries.push(e))?;
    Ok(entries)
}

/// Whether [`size_of_image_at`] reads through the kernel here, and so cannot fault on an image
/// whose headers point at unmapped memory (false under a seccomp filter that refuses
/// `process_vm_readv`).
pub fn guarded_reads_available() -> bool {
    let byte = 0u8;
    // SAFETY: `byte` is a live local; the source reads only it.
    let src = unsafe { MemorySource::new(&byte) };
    src.kernel_reads_work()
}

/// Sizes the module image at `ptr` in this process's memory and says which bytes to ship.
///
/// Reads headers first, then only as far as their sizes say (never past [`MAX_IMAGE_SIZE`]).
/// Reads go through the kernel where it allows (`process_vm_readv` on the own process), so a
/// header pointing at unmapped memory gives [`ImageError::Unreadable`] instead of a fault. For
/// a fatbin wrapper, the payload is the inner fatbin: ship those bytes, not the wrapper and its
/// raw pointers. A version-2 wrapper's prelinked list is read by [`prelinked_fatbins_at`].
///
/// # Safety
/// `ptr` must be NULL or point to a module image as the driver API defines it (the argument of
/// `cuModuleLoadData` and friends): memory its headers describe must be readable and unchanged
/// during the call. Where the kernel refuses `process_vm_readv` (a seccomp filter), reads are
/// plain loads and an image whose headers lie can fault.
///
/// # Errors
/// [`ImageError::NullPointer`], and any error of [`size_of_image`].
pub unsafe fn size_of_image_at(ptr: *const u8) -> Result<ImageInfo, ImageError> {
    if ptr.is_null() {
        return Err(ImageError::NullPointer);
    }
    // SAFETY: the caller guarantees `ptr` points to a module image.
    let src = unsafe { MemorySource::new(ptr) };
    let layout = layout_in(&src)?;
    if layout.kind != ImageKind::FatbinWrapper {
        return Ok(ImageInfo {
            kind: layout.kind,
            wrapper: None,
            payload_addr: ptr as usize,
            payload: layout,
        });
    }
    let wrapper = wrapper::parse(&src)?;
    // SAFETY: a valid wrapper's data pointer points to the fatbin, which the caller's contract
    // covers.
    let (payload_addr, payload) = unsafe { inner_image_at(wrapper.fatbin)? };
    Ok(ImageInfo {
        kind: ImageKind::FatbinWrapper,
        wrapper: Some(wrapper),
        payload_addr,
        payload,
    })
}

/// Sizes the image a wrapper points at; refuses NULL and nested wrappers.
///
/// # Safety
/// `addr` must be 0 or the address of a module image (the contract of [`size_of_image_at`]).
unsafe fn inner_image_at(addr: u64) -> Result<(usize, ImageLayout), ImageError> {
    if addr == 0 {
        return Err(ImageError::BadWrapperTarget { what: "NULL" });
    }
    let addr = usize::try_from(addr).map_err(|_| ImageError::BadWrapperTarget {
        what: "an address beyond this process",
    })?;
    // SAFETY: the caller guarantees `addr` is the address of a module image.
    let src = unsafe { MemorySource::new(addr as *const u8) };
    let layout = layout_in(&src)?;
    if layout.kind == ImageKind::FatbinWrapper {
        return Err(ImageError::BadWrapperTarget {
            what: "another wrapper",
        });
    }
    Ok((addr, layout))
}

/// Sizes the prelinked fatbins of a version-2 wrapper (its NULL-terminated pointer list).
///
/// Returns an empty list for a version-1 wrapper or a NULL list. At most 65536 entries are read.
///
/// # Safety
/// `wrapper` must have been read from a live wrapper whose list and images are readable and
/// unchanged during the call (the contract of [`size_of_image_at`]).
///
/// # Errors
/// Any error of [`size_of_image_at`] for a listed image; [`ImageError::TooLarge`] for a list
/// without a NULL in 65536 entries.
pub unsafe fn prelinked_fatbins_at(
    wrapper: &FatbinWrapper,
) -> Result<Vec<(usize, ImageLayout)>, ImageError> {
    const MAX_PRELINKED: u64 = 1 << 16;
    if wrapper.version != 2 || wrapper.filename_or_prelinked == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the caller guarantees the list is readable; reads stop at its NULL.
    let list = unsafe { MemorySource::new(wrapper.filename_or_prelinked as usize as *const u8) };
    let mut out = Vec::new();
    for i in 0..MAX_PRELINKED {
        let addr = source::read_u64(&list, i * 8)?;
        if addr == 0 {
            return Ok(out);
        }
        // SAFETY: each listed pointer is a prelinked fatbin, covered by the caller's contract.
        out.push(unsafe { inner_image_at(addr)? });
    }
    Err(ImageError::TooLarge {
        field: "prelinked fatbin list length",
        value: MAX_PRELINKED,
        limit: MAX_PRELINKED - 1,
    })
}
