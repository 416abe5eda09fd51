//! Tensor-map descriptors, encoded by the real driver (no GPU work): the guest's arrays come
//! with the request, the 128-byte map goes back.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::real_or_unsupported;
use crate::dispatch::ClientContext;

const MAX_RANK: u32 = 5;

/// `u8 present, [n × T]`: an optional array of `n` values.
fn array<T: Copy + Default>(
    dec: &mut Decoder<'_>,
    n: usize,
) -> Result<Option<Vec<T>>, DecodeError> {
    if !dec.get_flag("array")? {
        return Ok(None);
    }
    // SAFETY: T is a plain integer type here.
    (0..n)
        .map(|_| unsafe { dec.get_raw::<T>() })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn ptr<T>(v: &Option<Vec<T>>) -> *const T {
    v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr())
}

fn rank(dec: &mut Decoder<'_>, min: u32) -> Result<u32, DecodeError> {
    let rank: u32 = dec.get()?;
    if !(min..=MAX_RANK).contains(&rank) {
        return Err(DecodeError::BadTag {
            what: "tensor rank",
            tag: rank as u8,
        });
    }
    Ok(rank)
}

fn answer(out: &mut Vec<u8>, r: CUresult, map: &CUtensorMap) {
    let mut enc = ResponseHeader::start(out, r.0);
    // SAFETY: CUtensorMap is 16 plain u64 words.
    unsafe { enc.put_raw(map) };
}

/// `cuTensorMapEncodeTiled`: `u32 dtype, u32 rank, u64 address, dims[rank], strides[rank-1],
/// box[rank], elementStrides[rank]` (each `u8 present` first), `u32 interleave, swizzle,
/// l2promotion, oobfill` → result, `CUtensorMap`.
pub fn encode_tiled(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let dtype: u32 = dec.get()?;
    let rank = rank(dec, 1)?;
    let address: u64 = dec.get()?;
    let n = rank as usize;
    let dims = array::<u64>(dec, n)?;
    let strides = array::<u64>(dec, n - 1)?;
    let boxes = array::<u32>(dec, n)?;
    let elems = array::<u32>(dec, n)?;
    let [interleave, swizzle, l2, oob]: [u32; 4] = [dec.get()?, dec.get()?, dec.get()?, dec.get()?];
    dec.finish()?;
    let mut map = CUtensorMap::default();
    let f = real_or_unsupported!(cuTensorMapEncodeTiled, out);
    // SAFETY: every array has the length the rank says, or is NULL; `map` is a live local.
    let r = unsafe {
        f(
            &mut map,
            CUtensorMapDataType(dtype),
            rank,
            address as *mut _,
            ptr(&dims),
            ptr(&strides),
            ptr(&boxes),
            ptr(&elems),
            CUtensorMapInterleave(interleave),
            CUtensorMapSwizzle(swizzle),
            CUtensorMapL2promotion(l2),
            CUtensorMapFloatOOBfill(oob),
        )
    };
    answer(out, r, &map);
    Ok(())
}

/// `cuTensorMapEncodeIm2col`: like [`encode_tiled`] with `lower[rank-2], upper[rank-2], u32
/// channelsPerPixel, u32 pixelsPerColumn` in place of the box.
pub fn encode_im2col(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let dtype: u32 = dec.get()?;
    let rank = rank(dec, 3)?;
    let address: u64 = dec.get()?;
    let n = rank as usize;
    let dims = array::<u64>(dec, n)?;
    let strides = array::<u64>(dec, n - 1)?;
    let lower = array::<i32>(dec, n - 2)?;
    let upper = array::<i32>(dec, n - 2)?;
    let channels: u32 = dec.get()?;
    let pixels: u32 = dec.get()?;
    let elems = array::<u32>(dec, n)?;
    let [interleave, swizzle, l2, oob]: [u32; 4] = [dec.get()?, dec.get()?, dec.get()?, dec.get()?];
    dec.finish()?;
    let mut map = CUtensorMap::default();
    let f = real_or_unsupported!(cuTensorMapEncodeIm2col, out);
    // SAFETY: as in `encode_tiled`.
    let r = unsafe {
        f(
            &mut map,
            CUtensorMapDataType(dtype),
            rank,
            address as *mut _,
            ptr(&dims),
            ptr(&strides),
            ptr(&lower),
            ptr(&upper),
            channels,
            pixels,
            ptr(&elems),
            CUtensorMapInterleave(interleave),
            CUtensorMapSwizzle(swizzle),
            CUtensorMapL2promotion(l2),
            CUtensorMapFloatOOBfill(oob),
        )
    };
    answer(out, r, &map);
    Ok(())
}

/// `cuTensorMapReplaceAddress`: `CUtensorMap, u64 address` → result, `CUtensorMap`.
pub fn replace_address(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: CUtensorMap is 16 plain u64 words.
    let mut map: CUtensorMap = unsafe { dec.get_raw()? };
    let address: u64 = dec.get()?;
    dec.finish()?;
    let f = real_or_unsupported!(cuTensorMapReplaceAddress, out);
    // SAFETY: `map` is a live local holding the guest's encoded map.
    let r = unsafe { f(&mut map, address as *mut _) };
    answer(out, r, &map);
    Ok(())
}
