//! JIT options (`cuModuleLoadDataEx`, `cuLibraryLoadData`) on the wire.
//!
//! Each option is `(u32 option, u64 slot)`, where `slot` is the raw `void*` value the guest put
//! in `optionValues[i]`: an integer for most options, a size for `*_LOG_BUFFER_SIZE_BYTES`. The
//! log buffers themselves (`*_LOG_BUFFER`) are guest memory: the host allocates its own of the
//! size its `*_SIZE_BYTES` option gives, and sends the text back. Options whose values point to
//! arrays of guest pointers are refused by the guest before sending.

use crate::codec::{DecodeError, Decoder, Encoder};

/// `CU_JIT_INFO_LOG_BUFFER`.
pub const INFO_LOG_BUFFER: u32 = 3;
/// `CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES`.
pub const INFO_LOG_BUFFER_SIZE_BYTES: u32 = 4;
/// `CU_JIT_ERROR_LOG_BUFFER`.
pub const ERROR_LOG_BUFFER: u32 = 5;
/// `CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES`.
pub const ERROR_LOG_BUFFER_SIZE_BYTES: u32 = 6;
/// `CU_JIT_GLOBAL_SYMBOL_NAMES`.
pub const GLOBAL_SYMBOL_NAMES: u32 = 17;
/// `CU_JIT_GLOBAL_SYMBOL_ADDRESSES`.
pub const GLOBAL_SYMBOL_ADDRESSES: u32 = 18;
/// `CU_JIT_REFERENCED_KERNEL_NAMES`.
pub const REFERENCED_KERNEL_NAMES: u32 = 25;
/// `CU_JIT_REFERENCED_VARIABLE_NAMES`.
pub const REFERENCED_VARIABLE_NAMES: u32 = 27;
/// Options whose value points to guest arrays (symbol names and addresses, referenced kernel
/// and variable names): not forwarded.
pub const POINTER_ARRAY_OPTIONS: [u32; 4] = [
    GLOBAL_SYMBOL_NAMES,
    GLOBAL_SYMBOL_ADDRESSES,
    REFERENCED_KERNEL_NAMES,
    REFERENCED_VARIABLE_NAMES,
];
/// The largest log buffer the host allocates for a guest.
pub const MAX_LOG: u64 = 1 << 20;
/// The most JIT options one request may carry; the host refuses more as malformed.
pub const MAX_JIT_OPTIONS: u32 = 64;
/// The most library options (`cuLibraryLoadData`) one request may carry.
pub const MAX_LIBRARY_OPTIONS: u32 = 8;

/// Encodes the options.
pub fn put_options(enc: &mut Encoder<'_>, options: &[(u32, u64)]) {
    enc.put(options.len() as u32);
    for &(option, slot) in options {
        enc.put(option);
        enc.put(slot);
    }
}

/// Decodes options written by [`put_options`], at most `limit` of them.
///
/// # Errors
/// Truncation, or more than `limit` options.
pub fn get_options(dec: &mut Decoder<'_>, limit: u32) -> Result<Vec<(u32, u64)>, DecodeError> {
    let count: u32 = dec.get()?;
    if count > limit {
        return Err(DecodeError::BadTag {
            what: "JIT option count",
            tag: u8::MAX,
        });
    }
    (0..count)
        .map(|_| Ok((dec.get::<u32>()?, dec.get::<u64>()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use cuda_headers::CUjit_option;

    #[test]
    fn option_numbers_are_the_headers() {
        for (ours, header) in [
            (super::INFO_LOG_BUFFER, CUjit_option::CU_JIT_INFO_LOG_BUFFER),
            (
                super::INFO_LOG_BUFFER_SIZE_BYTES,
                CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            ),
            (
                super::ERROR_LOG_BUFFER,
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            ),
            (
                super::ERROR_LOG_BUFFER_SIZE_BYTES,
                CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            ),
            (
                super::GLOBAL_SYMBOL_NAMES,
                CUjit_option::CU_JIT_GLOBAL_SYMBOL_NAMES,
            ),
            (
                super::GLOBAL_SYMBOL_ADDRESSES,
                CUjit_option::CU_JIT_GLOBAL_SYMBOL_ADDRESSES,
            ),
            (
                super::REFERENCED_KERNEL_NAMES,
                CUjit_option::CU_JIT_REFERENCED_KERNEL_NAMES,
            ),
            (
                super::REFERENCED_VARIABLE_NAMES,
                CUjit_option::CU_JIT_REFERENCED_VARIABLE_NAMES,
            ),
        ] {
            assert_eq!(ours, header.0);
        }
    }
}
