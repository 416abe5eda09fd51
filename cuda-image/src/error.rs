//! The typed errors of image sizing.

use thiserror::Error;

/// Why an image could not be identified or sized.
///
/// Every variant carries enough detail for one clear log line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    /// The image pointer was NULL.
    #[error("module image pointer is NULL")]
    NullPointer,
    /// The first bytes match no known image format.
    #[error("unknown module image format (first bytes {first_bytes:#010x})")]
    UnknownFormat {
        /// The first four bytes, read little-endian (fewer bytes are zero-padded).
        first_bytes: u32,
    },
    /// Memory that the image's headers refer to is not mapped in this process.
    #[error("module image memory unreadable at bytes {offset}..{end}")]
    Unreadable {
        /// First unreadable byte, from the image start.
        offset: u64,
        /// Where the attempted read would have ended.
        end: u64,
    },
    /// A header or payload extends past the bytes that are available.
    #[error("module image truncated: need bytes {offset}..{end}, only {available} available")]
    Truncated {
        /// Where the read started, from the image start.
        offset: u64,
        /// Where the read would have ended.
        end: u64,
        /// How many bytes the window holds.
        available: u64,
    },
    /// A size or offset field is beyond [`crate::MAX_IMAGE_SIZE`] or otherwise absurd.
    #[error("module image field {field} = {value} exceeds the limit {limit}")]
    TooLarge {
        /// The field that was read.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted value.
        limit: u64,
    },
    /// A header field has a value the format does not allow.
    #[error("module image field {field} has invalid value {value}")]
    InvalidField {
        /// The field that was read.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The ELF image is not a 64-bit little-endian ELF, which every cubin is.
    #[error("ELF image is not 64-bit little-endian (class {class}, data {data})")]
    UnsupportedElf {
        /// `e_ident[EI_CLASS]`.
        class: u8,
        /// `e_ident[EI_DATA]`.
        data: u8,
    },
    /// PTX text has no terminating NUL inside the window or the size limit.
    #[error("PTX text is not NUL-terminated within {searched} bytes")]
    Unterminated {
        /// How many bytes were searched.
        searched: u64,
    },
    /// A fatbin wrapper points at another wrapper, or at nothing.
    #[error("fatbin wrapper points at {what}")]
    BadWrapperTarget {
        /// What was found instead of a fatbin.
        what: &'static str,
    },
}
