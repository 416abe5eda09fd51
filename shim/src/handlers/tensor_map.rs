//! Tensor-map descriptors (TMA, Hopper and later): the driver encodes them from shapes and a
//! device address, with no GPU work. The guest ships the arrays (each `tensorRank` long, strides
//! `tensorRank - 1`), the host encodes, and the 128-byte map comes back. Host halves:
//! `host/src/dispatch/handlers/tensor_map.rs`.
#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::c_void;

use cuda_headers::*;
use protocol::Encoder;

use crate::forward::{bad_response, call_with};

/// Ranks the driver accepts (1 to 5).
const MAX_RANK: u32 = 5;

/// # Safety
/// `p` is NULL or holds `n` values.
unsafe fn put_array<T: Copy>(enc: &mut Encoder<'_>, p: *const T, n: usize) {
    enc.put_flag(!p.is_null());
    if !p.is_null() {
        for i in 0..n {
            // SAFETY: per the contract; the element types are plain integers.
            unsafe { enc.put_raw(&*p.add(i)) };
        }
    }
}

fn map_back(tensorMap: *mut CUtensorMap, dec: &mut protocol::Decoder<'_>) -> CuResult {
    // SAFETY: CUtensorMap is 16 plain u64 words.
    let map: CUtensorMap = unsafe { dec.get_raw() }.map_err(bad_response)?;
    if !tensorMap.is_null() {
        // SAFETY: non-NULL out-pointer, valid per the driver API contract.
        unsafe { tensorMap.write(map) };
    }
    Ok(())
}

/// Encodes a tiled tensor map on the host.
///
/// # Safety
/// The arrays hold `tensorRank` (strides: `tensorRank - 1`) entries; `tensorMap` is writable.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a rank out of range; the host's result.
pub unsafe fn cuTensorMapEncodeTiled(
    tensorMap: *mut CUtensorMap,
    tensorDataType: CUtensorMapDataType,
    tensorRank: cuuint32_t,
    globalAddress: *mut c_void,
    globalDim: *const cuuint64_t,
    globalStrides: *const cuuint64_t,
    boxDim: *const cuuint32_t,
    elementStrides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2Promotion: CUtensorMapL2promotion,
    oobFill: CUtensorMapFloatOOBfill,
) -> CuResult {
    if tensorRank == 0 || tensorRank > MAX_RANK {
        return Err(CuError::INVALID_VALUE);
    }
    let rank = tensorRank as usize;
    call_with(
        shim_macros::cuda_call_id!(cuTensorMapEncodeTiled),
        |enc| {
            enc.put(tensorDataType.0);
            enc.put(tensorRank);
            enc.put(globalAddress as u64);
            // SAFETY: per the contract.
            unsafe {
                put_array(enc, globalDim, rank);
                put_array(enc, globalStrides, rank - 1);
                put_array(enc, boxDim, rank);
                put_array(enc, elementStrides, rank);
            }
            for v in [interleave.0, swizzle.0, l2Promotion.0, oobFill.0] {
                enc.put(v);
            }
        },
        |dec| map_back(tensorMap, dec),
    )
}

/// Encodes an im2col tensor map on the host.
///
/// # Safety
/// As [`cuTensorMapEncodeTiled`]; the pixel-box corners hold `tensorRank - 2` entries.
///
/// # Errors
/// As [`cuTensorMapEncodeTiled`].
pub unsafe fn cuTensorMapEncodeIm2col(
    tensorMap: *mut CUtensorMap,
    tensorDataType: CUtensorMapDataType,
    tensorRank: cuuint32_t,
    globalAddress: *mut c_void,
    globalDim: *const cuuint64_t,
    globalStrides: *const cuuint64_t,
    pixelBoxLowerCorner: *const i32,
    pixelBoxUpperCorner: *const i32,
    channelsPerPixel: cuuint32_t,
    pixelsPerColumn: cuuint32_t,
    elementStrides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2Promotion: CUtensorMapL2promotion,
    oobFill: CUtensorMapFloatOOBfill,
) -> CuResult {
    if !(3..=MAX_RANK).contains(&tensorRank) {
        return Err(CuError::INVALID_VALUE);
    }
    let rank = tensorRank as usize;
    call_with(
        shim_macros::cuda_call_id!(cuTensorMapEncodeIm2col),
        |enc| {
            enc.put(tensorDataType.0);
            enc.put(tensorRank);
            enc.put(globalAddress as u64);
            // SAFETY: per the contract.
            unsafe {
                put_array(enc, globalDim, rank);
                put_array(enc, globalStrides, rank - 1);
                put_array(enc, pixelBoxLowerCorner, rank - 2);
                put_array(enc, pixelBoxUpperCorner, rank - 2);
            }
            enc.put(channelsPerPixel);
            enc.put(pixelsPerColumn);
            // SAFETY: per the contract.
            unsafe { put_array(enc, elementStrides, rank) };
            for v in [interleave.0, swizzle.0, l2Promotion.0, oobFill.0] {
                enc.put(v);
            }
        },
        |dec| map_back(tensorMap, dec),
    )
}

/// Points an encoded tensor map at another device address (done on the host).
///
/// # Safety
/// `tensorMap` points to an encoded map.
///
/// # Errors
/// The host's result.
pub unsafe fn cuTensorMapReplaceAddress(
    tensorMap: *mut CUtensorMap,
    globalAddress: *mut c_void,
) -> CuResult {
    // SAFETY: per the contract.
    let map = unsafe { tensorMap.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    call_with(
        shim_macros::cuda_call_id!(cuTensorMapReplaceAddress),
        |enc| {
            // SAFETY: plain words.
            unsafe { enc.put_raw(&map) };
            enc.put(globalAddress as u64);
        },
        |dec| map_back(tensorMap, dec),
    )
}
