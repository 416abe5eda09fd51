//! Occupancy queries. Guest halves: `shim/src/handlers/occupancy.rs` (which runs the
//! block-size search itself when the application gives a shared-memory callback).

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::gate::admit;
use crate::dispatch::ClientContext;

/// `cuOccupancyMaxPotentialBlockSize(WithFlags)` without a callback: `u64 func, u64 smem,
/// i32 limit, u32 flags` → result, `i32 min grid, i32 block`.
pub fn potential_block_size(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    let smem = dec.get::<u64>()? as usize;
    let limit: i32 = dec.get()?;
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let func = admit!(client.handles.function(func), out);
    let (mut grid, mut block) = (0i32, 0i32);
    // SAFETY: (both arms) live locals; no callback.
    let r = unsafe {
        if name == "cuOccupancyMaxPotentialBlockSizeWithFlags" {
            real_or_unsupported!(cuOccupancyMaxPotentialBlockSizeWithFlags, out)(
                &mut grid, &mut block, func, None, smem, limit, flags,
            )
        } else {
            real_or_unsupported!(cuOccupancyMaxPotentialBlockSize, out)(
                &mut grid, &mut block, func, None, smem, limit,
            )
        }
    };
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(grid);
    enc.put(block);
    Ok(())
}

/// `cuOccupancyAvailableDynamicSMemPerBlock`: `u64 func, i32 blocks, i32 block size` →
/// result, `u64 bytes`.
pub fn available_dynamic_smem(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    let blocks: i32 = dec.get()?;
    let size: i32 = dec.get()?;
    dec.finish()?;
    let func = admit!(client.handles.function(func), out);
    let mut bytes = 0usize;
    // SAFETY: a live local.
    let r = unsafe {
        real_or_unsupported!(cuOccupancyAvailableDynamicSMemPerBlock, out)(
            &mut bytes, func, blocks, size,
        )
    };
    ResponseHeader::start(out, r.0).put(bytes as u64);
    Ok(())
}

/// `cuOccupancyMaxActiveClusters`, `cuOccupancyMaxPotentialClusterSize`: `u64 func, 3 × u32
/// grid, 3 × u32 block, u32 shared, u64 stream, u32 n, n × CUlaunchAttribute` → result, `i32`.
pub fn cluster_query(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let func: u64 = dec.get()?;
    let mut d = [0u32; 7];
    for v in &mut d {
        *v = dec.get()?;
    }
    let stream: u64 = dec.get()?;
    let n: u32 = dec.get()?;
    if n > 64 {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    // SAFETY: CUlaunchAttribute is plain data.
    let mut attrs: Vec<CUlaunchAttribute> = (0..n)
        .map(|_| unsafe { dec.get_raw() })
        .collect::<Result<_, _>>()?;
    dec.finish()?;
    let func = admit!(client.handles.function(func), out);
    let stream = admit!(client.handles.stream(stream), out);
    for attr in &attrs {
        admit!(super::launch::attribute_events(&client.handles, attr), out);
    }
    let config = CUlaunchConfig {
        gridDimX: d[0],
        gridDimY: d[1],
        gridDimZ: d[2],
        blockDimX: d[3],
        blockDimY: d[4],
        blockDimZ: d[5],
        sharedMemBytes: d[6],
        hStream: stream,
        attrs: if attrs.is_empty() {
            std::ptr::null_mut()
        } else {
            attrs.as_mut_ptr()
        },
        numAttrs: n,
    };
    let mut value = 0i32;
    // SAFETY: (both arms) `config` and its attributes live for the call.
    let r = unsafe {
        if name == "cuOccupancyMaxActiveClusters" {
            real_or_unsupported!(cuOccupancyMaxActiveClusters, out)(&mut value, func, &config)
        } else {
            real_or_unsupported!(cuOccupancyMaxPotentialClusterSize, out)(&mut value, func, &config)
        }
    };
    ResponseHeader::start(out, r.0).put(value);
    Ok(())
}
