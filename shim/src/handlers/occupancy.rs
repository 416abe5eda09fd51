//! Occupancy queries. `cuOccupancyMaxPotentialBlockSize*` with a `blockSizeToDynamicSMemSize`
//! callback cannot run on the host (the callback is guest code), so the guest runs the search
//! itself, the way the driver documents it: for every block size from the limit down in steps
//! of the warp size, it evaluates the callback here, asks the host how many blocks of that size
//! fit on a multiprocessor (`cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`), and keeps
//! the size that keeps the most threads resident (the larger size on ties), stopping early once
//! a multiprocessor is full. Without a callback the call is forwarded as is. Host halves:
//! `host/src/dispatch/handlers/occupancy.rs`.
#![allow(non_snake_case)]

use cuda_headers::*;

use super::arrays::{slice, write};
use crate::forward::generated;
use crate::forward::{bad_response, call_with};

/// What the block-size search needs to know about the device and the function.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Largest block the caller, the device and the function all allow.
    block_limit: i32,
    /// Step between candidates (the warp size).
    granularity: i32,
    /// Threads a multiprocessor can hold: reaching it ends the search.
    threads_per_sm: i32,
}

/// The search: returns (blocks per multiprocessor, block size) of the best candidate.
fn search(l: Limits, mut blocks_for: impl FnMut(i32) -> CuResult<i32>) -> CuResult<(i32, i32)> {
    let g = l.granularity.max(1);
    let aligned = (l.block_limit + g - 1) / g * g;
    let (mut best_threads, mut best) = (0i64, (0, 0));
    let mut candidate = aligned;
    while candidate > 0 {
        let size = candidate.min(l.block_limit);
        let blocks = blocks_for(size)?;
        let threads = i64::from(blocks) * i64::from(size);
        if threads > best_threads {
            best_threads = threads;
            best = (blocks, size);
        }
        if best_threads == i64::from(l.threads_per_sm) {
            break;
        }
        candidate -= g;
    }
    Ok(best)
}

fn device_attribute(attr: CUdevice_attribute, dev: CUdevice) -> CuResult<i32> {
    let mut v = 0;
    // SAFETY: a live local for the generated forwarder.
    unsafe { generated::cuDeviceGetAttribute(&mut v, attr, dev) }?;
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn potential_block_size(
    id: u32,
    min_grid: *mut i32,
    block: *mut i32,
    func: CUfunction,
    callback: CUoccupancyB2DSize,
    smem: usize,
    limit: i32,
    flags: u32,
) -> CuResult {
    if min_grid.is_null() || block.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let Some(callback) = callback else {
        return call_with(
            id,
            |enc| {
                enc.put(func as u64);
                enc.put(smem as u64);
                enc.put(limit);
                enc.put(flags);
            },
            |dec| {
                write(min_grid, dec.get::<i32>().map_err(bad_response)?);
                write(block, dec.get::<i32>().map_err(bad_response)?);
                Ok(())
            },
        );
    };
    let mut dev: CUdevice = 0;
    // SAFETY: a live local.
    unsafe { generated::cuCtxGetDevice(&mut dev) }?;
    use CUdevice_attribute as A;
    let sms = device_attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev)?;
    let warp = device_attribute(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev)?;
    let device_max = device_attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev)?;
    let threads_per_sm =
        device_attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, dev)?;
    let mut func_max = 0;
    // SAFETY: a live local.
    unsafe {
        generated::cuFuncGetAttribute(
            &mut func_max,
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
            func,
        )
    }?;
    let mut block_limit = if limit <= 0 { device_max } else { limit };
    block_limit = block_limit.min(device_max).min(func_max);
    let limits = Limits {
        block_limit,
        granularity: warp,
        threads_per_sm,
    };
    let (blocks, size) = search(limits, |size| {
        // SAFETY: the application's callback, called as the driver would call it.
        let dynamic = unsafe { callback(size) };
        let mut n = 0;
        // SAFETY: a live local.
        unsafe {
            generated::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
                &mut n, func, size, dynamic, flags,
            )
        }?;
        Ok(n)
    })?;
    write(min_grid, blocks * sms);
    write(block, size);
    Ok(())
}

/// The block size that maximises occupancy, and the grid that fills the device with it.
///
/// # Safety
/// Out-pointers are valid; a callback is safe to call with any block size.
///
/// # Errors
/// The host's result.
pub unsafe fn cuOccupancyMaxPotentialBlockSize(
    minGridSize: *mut i32,
    blockSize: *mut i32,
    func: CUfunction,
    blockSizeToDynamicSMemSize: CUoccupancyB2DSize,
    dynamicSMemSize: usize,
    blockSizeLimit: i32,
) -> CuResult {
    potential_block_size(
        shim_macros::cuda_call_id!(cuOccupancyMaxPotentialBlockSize),
        minGridSize,
        blockSize,
        func,
        blockSizeToDynamicSMemSize,
        dynamicSMemSize,
        blockSizeLimit,
        0,
    )
}

/// As [`cuOccupancyMaxPotentialBlockSize`], with occupancy flags.
///
/// # Safety
/// As [`cuOccupancyMaxPotentialBlockSize`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    minGridSize: *mut i32,
    blockSize: *mut i32,
    func: CUfunction,
    blockSizeToDynamicSMemSize: CUoccupancyB2DSize,
    dynamicSMemSize: usize,
    blockSizeLimit: i32,
    flags: u32,
) -> CuResult {
    potential_block_size(
        shim_macros::cuda_call_id!(cuOccupancyMaxPotentialBlockSizeWithFlags),
        minGridSize,
        blockSize,
        func,
        blockSizeToDynamicSMemSize,
        dynamicSMemSize,
        blockSizeLimit,
        flags,
    )
}

/// Dynamic shared memory left per block.
///
/// # Safety
/// `dynamicSmemSize` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuOccupancyAvailableDynamicSMemPerBlock(
    dynamicSmemSize: *mut usize,
    func: CUfunction,
    numBlocks: i32,
    blockSize: i32,
) -> CuResult {
    if dynamicSmemSize.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuOccupancyAvailableDynamicSMemPerBlock),
        |enc| {
            enc.put(func as u64);
            enc.put(numBlocks);
            enc.put(blockSize);
        },
        |dec| {
            write(
                dynamicSmemSize,
                dec.get::<u64>().map_err(bad_response)? as usize,
            );
            Ok(())
        },
    )
}

/// `u64 func, 3 × u32 grid, 3 × u32 block, u32 shared, u64 stream, u32 n, n ×
/// CUlaunchAttribute` → `i32`.
fn cluster_query(
    id: u32,
    out: *mut i32,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CuResult {
    // SAFETY: per the driver API contract.
    let c = unsafe { config.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    if out.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract, `attrs` holds `numAttrs` entries.
    let attrs = unsafe { slice(c.attrs.cast_const(), c.numAttrs as usize) }?;
    call_with(
        id,
        |enc| {
            enc.put(func as u64);
            for v in [
                c.gridDimX,
                c.gridDimY,
                c.gridDimZ,
                c.blockDimX,
                c.blockDimY,
                c.blockDimZ,
                c.sharedMemBytes,
            ] {
                enc.put(v);
            }
            enc.put(c.hStream as u64);
            enc.put(attrs.len() as u32);
            for a in attrs {
                // SAFETY: CUlaunchAttribute is plain data (ids, integers, handles, device addresses).
                unsafe { enc.put_raw(a) };
            }
        },
        |dec| {
            write(out, dec.get::<i32>().map_err(bad_response)?);
            Ok(())
        },
    )
}

/// How many clusters of the configured shape can be resident at once.
///
/// # Safety
/// `config` is valid; `numClusters` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuOccupancyMaxActiveClusters(
    numClusters: *mut i32,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CuResult {
    cluster_query(
        shim_macros::cuda_call_id!(cuOccupancyMaxActiveClusters),
        numClusters,
        func,
        config,
    )
}

/// The largest cluster size for the configuration.
///
/// # Safety
/// As [`cuOccupancyMaxActiveClusters`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuOccupancyMaxPotentialClusterSize(
    clusterSize: *mut i32,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CuResult {
    cluster_query(
        shim_macros::cuda_call_id!(cuOccupancyMaxPotentialClusterSize),
        clusterSize,
        func,
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device with 2048 threads per SM, at most 32 blocks, and `smem_per_sm` bytes of shared
    /// memory, where a block of `n` threads needs `smem(n)` bytes.
    fn model(smem_per_sm: i64, smem: impl Fn(i32) -> i64) -> impl FnMut(i32) -> CuResult<i32> {
        move |n| {
            let by_threads = 2048 / n;
            let by_smem = if smem(n) == 0 {
                i32::MAX
            } else {
                (smem_per_sm / smem(n)) as i32
            };
            Ok(by_threads.min(by_smem).min(32))
        }
    }

    #[test]
    fn without_pressure_the_largest_block_that_fills_an_sm_wins() {
        let l = Limits {
            block_limit: 1024,
            granularity: 32,
            threads_per_sm: 2048,
        };
        assert_eq!(search(l, model(1 << 20, |_| 0)).unwrap(), (2, 1024));
    }

    #[test]
    fn shared_memory_per_thread_moves_the_choice() {
        // 64 bytes per thread, 96 KiB per SM: at most 1536 resident threads whatever the size;
        // the search keeps the largest block reaching that (768 × 2).
        let l = Limits {
            block_limit: 1024,
            granularity: 32,
            threads_per_sm: 2048,
        };
        let (blocks, size) = search(l, model(96 * 1024, |n| i64::from(n) * 64)).unwrap();
        assert_eq!(i64::from(blocks) * i64::from(size), 1536);
        assert_eq!((blocks, size), (2, 768));
    }

    #[test]
    fn an_unaligned_limit_is_tried_first_and_errors_stop_the_search() {
        let l = Limits {
            block_limit: 100,
            granularity: 32,
            threads_per_sm: 2048,
        };
        let mut tried = Vec::new();
        let _ = search(l, |n| {
            tried.push(n);
            Ok(1)
        });
        assert_eq!(tried, [100, 96, 64, 32]);
        let r = search(l, |_| Err(CuError::INVALID_VALUE));
        assert_eq!(r.err(), Some(CuError::INVALID_VALUE));
    }
}
