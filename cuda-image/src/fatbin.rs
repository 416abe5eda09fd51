//! Fatbin containers (magic `0xBA55ED50`) and the entries inside them.
//!
//! Layout, little-endian (public knowledge of the format):
//!
//! ```text
//! container header: u32 magic | u16 version | u16 header_size | u64 files_size (excludes header)
//! entry header:     u16 kind (1 = PTX, 2 = ELF) | u16 | u32 header_size | u64 payload_size
//!                   @16 u32 compressed_size | @28 u32 sm_arch | @40 u64 flags
//!                   @56 u64 uncompressed_size (when the header is that long)
//! ```
//!
//! The next entry starts `header_size + max(payload_size, compressed_size)` after the current
//! one. Several containers may be laid back to back; the chain continues while the byte after a
//! container starts with the container magic.

use std::fmt;

use crate::source::{checked_end, read_u16, read_u32, read_u64, Source};
use crate::ImageError;

/// Magic of a fatbin container.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Entry flag: payload is LZ4-compressed.
pub const FLAG_LZ4: u64 = 0x2000;
/// Entry flag: payload is Zstandard-compressed.
pub const FLAG_ZSTD: u64 = 0x8000;

/// Smallest container header: magic, version, header size, files size.
const CONTAINER_HEADER_MIN: u64 = 16;
/// Largest container header accepted (the field is a u16; real ones are 16).
const CONTAINER_HEADER_MAX: u64 = 4096;
/// Smallest entry header that holds kind, header size, payload and compressed sizes.
const ENTRY_HEADER_MIN: u64 = 24;
/// Largest entry header accepted (real ones are 64, 80 or 112).
const ENTRY_HEADER_MAX: u64 = 4096;
/// Most containers accepted in one chain.
const MAX_CONTAINERS: usize = 1 << 16;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// PTX text (kind 1).
    Ptx,
    /// An ELF cubin (kind 2).
    Elf,
    /// A kind this crate does not know.
    Other(u16),
}

impl EntryKind {
    fn from_raw(raw: u16) -> Self {
        match raw {
            1 => Self::Ptx,
            2 => Self::Elf,
            other => Self::Other(other),
        }
    }
}

/// How an entry's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 (flag `0x2000`).
    Lz4,
    /// Zstandard (flag `0x8000`).
    Zstd,
}

impl Compression {
    fn from_flags(flags: u64) -> Self {
        if flags & FLAG_ZSTD != 0 {
            Self::Zstd
        } else if flags & FLAG_LZ4 != 0 {
            Self::Lz4
        } else {
            Self::None
        }
    }
}

/// One entry of a fatbin, for logs and tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatbinEntry {
    /// Index of the container in the chain, from 0.
    pub container: usize,
    /// Offset of the entry header from the start of the image.
    pub offset: u64,
    /// What the entry holds.
    pub kind: EntryKind,
    /// SM architecture (for example 90 for `sm_90`), when the header is long enough to hold it.
    pub sm_arch: Option<u32>,
    /// How the payload is compressed.
    pub compression: Compression,
    /// Raw flags, when the header is long enough to hold them.
    pub flags: u64,
    /// Length of the entry header.
    pub header_len: u64,
    /// The payload-size field.
    pub payload_len: u64,
    /// The compressed-size field.
    pub compressed_len: u64,
    /// The uncompressed size, when the header holds it.
    pub uncompressed_len: Option<u64>,
}

impl fmt::Display for FatbinEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            EntryKind::Ptx => "ptx".to_owned(),
            EntryKind::Elf => "elf".to_owned(),
            EntryKind::Other(k) => format!("kind{k}"),
        };
        let arch = self
            .sm_arch
            .map_or_else(|| "sm_?".to_owned(), |a| format!("sm_{a}"));
        let comp = match self.compression {
            Compression::None => "plain",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        write!(
            f,
            "container {} @{:#x}: {kind} {arch} {comp} payload={} compressed={}",
            self.container, self.offset, self.payload_len, self.compressed_len
        )
    }
}

/// A parsed container header.
struct Container {
    header_len: u64,
    len: u64,
}

fn read_container(src: &dyn Source, at: u64) -> Result<Container, ImageError> {
    let magic = read_u32(src, at)?;
    if magic != FATBIN_MAGIC {
        return Err(ImageError::UnknownFormat { first_bytes: magic });
    }
    let header_len = u64::from(read_u16(src, at + 6)?);
    if !(CONTAINER_HEADER_MIN..=CONTAINER_HEADER_MAX).contains(&header_len) {
        return Err(ImageError::InvalidField {
            field: "fatbin header_size",
            value: header_len,
        });
    }
    let files_len = read_u64(src, at + 8)?;
    let len = checked_end(header_len, files_len)?;
    checked_end(at, len)?;
    Ok(Container { header_len, len })
}

/// Walks the entries of the container at `at`, calling `visit` for each; returns its length.
fn walk_container(
    src: &dyn Source,
    at: u64,
    index: usize,
    visit: &mut dyn FnMut(FatbinEntry),
) -> Result<u64, ImageError> {
    let container = read_container(src, at)?;
    let end = at + container.len;
    let mut entry = at + container.header_len;
    while entry < end {
        let kind = read_u16(src, entry)?;
        let header_len = u64::from(read_u32(src, entry + 4)?);
        if header_len == 0 {
            // Zero padding after the last entry: nothing more to describe.
            break;
        }
        if !(ENTRY_HEADER_MIN..=ENTRY_HEADER_MAX).contains(&header_len) {
            return Err(ImageError::InvalidField {
                field: "fatbin entry header_size",
                value: header_len,
            });
        }
        let header_end = checked_end(entry, header_len)?;
        if header_end > end {
            return Err(ImageError::Truncated {
                offset: entry,
                end: header_end,
                available: end,
            });
        }
        // One read for the fields this crate knows (the first 64 bytes of the header).
        let mut h = [0u8; 64];
        let known = &mut h[..header_len.min(64) as usize];
        src.read_at(entry, known)?;
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let payload_len = u64_at(8);
        let compressed_len = u64::from(u32_at(16));
        let sm_arch = (header_len >= 32).then(|| u32_at(28));
        let flags = if header_len >= 48 { u64_at(40) } else { 0 };
        let uncompressed_len = (header_len >= 64).then(|| u64_at(56));
        let next = checked_end(header_end, payload_len.max(compressed_len))?;
        if next > end {
            return Err(ImageError::Truncated {
                offset: entry,
                end: next,
                available: end,
            });
        }
        visit(FatbinEntry {
            container: index,
            offset: entry,
            kind: EntryKind::from_raw(kind),
            sm_arch,
            compression: Compression::from_flags(flags),
            flags,
            header_len,
            payload_len,
            compressed_len,
            uncompressed_len,
        });
        entry = next;
    }
    Ok(container.len)
}

/// Walks a chain of containers starting at offset 0; returns the total length and count.
pub(crate) fn walk_chain(
    src: &dyn Source,
    visit: &mut dyn FnMut(FatbinEntry),
) -> Result<(u64, usize), ImageError> {
    let mut at = 0u64;
    let mut count = 0usize;
    loop {
        at = checked_end(at, walk_container(src, at, count, visit)?)?;
        count += 1;
        // Probe the whole next header, so that following the chain reads nothing unchecked.
        let mut header = [0u8; CONTAINER_HEADER_MIN as usize];
        if count >= MAX_CONTAINERS
            || !src.probe_at(at, &mut header)
            || u32::from_le_bytes([header[0], header[1], header[2], header[3]]) != FATBIN_MAGIC
        {
            return Ok((at, count));
        }
    }
}
