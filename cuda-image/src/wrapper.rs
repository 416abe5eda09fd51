//! cudart's fatbin wrapper, `__fatBinC_Wrapper_t` on 64-bit:
//! `i32 magic | i32 version | u64 data (the fatbin) | u64 filename (v1) or prelinked list (v2)`.

use crate::source::{read_u32, read_u64, Source};
use crate::ImageError;

/// Magic of a fatbin wrapper.
pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// Size of the wrapper struct on 64-bit.
pub const WRAPPER_LEN: u64 = 24;

/// A parsed fatbin wrapper; the pointers are addresses in the process that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatbinWrapper {
    /// 1, or 2 when `filename_or_prelinked` is a NULL-terminated list of prelinked fatbins.
    pub version: u32,
    /// Address of the fatbin.
    pub fatbin: u64,
    /// Version 1: address of a file name (or 0); version 2: address of the prelinked list.
    pub filename_or_prelinked: u64,
}

pub(crate) fn parse(src: &dyn Source) -> Result<FatbinWrapper, ImageError> {
    let magic = read_u32(src, 0)?;
    if magic != WRAPPER_MAGIC {
        return Err(ImageError::UnknownFormat { first_bytes: magic });
    }
    let version = read_u32(src, 4)?;
    if !(1..=2).contains(&version) {
        return Err(ImageError::InvalidField {
            field: "fatbin wrapper version",
            value: u64::from(version),
        });
    }
    Ok(FatbinWrapper {
        version,
        fatbin: read_u64(src, 8)?,
        filename_or_prelinked: read_u64(src, 16)?,
    })
}
