//! Kernel launches: the guest packs parameters using layouts the host driver reports
//! (`cuFuncGetParamInfo`), cached per function handle. Host halves:
//! `host/src/dispatch/handlers/launch.rs`.
#![allow(non_snake_case)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cuda_headers::*;
use protocol::{special, Encoder};

use crate::forward::{bad_response, call_with, post};

type Layout = Arc<[(u32, u32)]>;

static LAYOUTS: Mutex<Option<HashMap<u64, Layout>>> = Mutex::new(None);

/// Drops every cached layout: after an unload, a handle value may name another function.
pub fn forget_layouts() {
    *LAYOUTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn layout(func: u64) -> CuResult<Layout> {
    if let Some(found) = LAYOUTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(&func))
    {
        return Ok(found.clone());
    }
    let layout: Layout = call_with(
        special::PARAM_LAYOUT.0,
        |enc| enc.put(func),
        |dec| {
            let count: u32 = dec.get().map_err(bad_response)?;
            (0..count)
                .map(|_| {
                    Ok((
                        dec.get::<u32>().map_err(bad_response)?,
                        dec.get::<u32>().map_err(bad_response)?,
                    ))
                })
                .collect::<CuResult<Vec<_>>>()
        },
    )?
    .into();
    LAYOUTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(func, layout.clone());
    Ok(layout)
}

const FORM_NONE: u8 = 0;
const FORM_POINTERS: u8 = 1;
const FORM_EXTRA: u8 = 2;

/// The parameters, packed: `u8 form, bytes packed, u32 n, n × (offset, size)`.
///
/// Shared with graph kernel nodes (`graph.rs`), which carry the same parameters.
///
/// # Safety
/// `kernelParams` has one valid pointer per parameter of `func`; `extra` is a valid
/// `CU_LAUNCH_PARAM_*` list.
///
/// # Errors
/// The layout query's failure, or `CUDA_ERROR_INVALID_VALUE` for a malformed list.
pub(crate) unsafe fn put_params(
    enc: &mut Encoder<'_>,
    func: u64,
    kernelParams: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    if !kernelParams.is_null() {
        let layout = layout(func)?;
        let total = layout
            .iter()
            .map(|&(o, s)| o as usize + s as usize)
            .max()
            .unwrap_or(0);
        let mut packed = vec![0u8; total];
        for (i, &(offset, size)) in layout.iter().enumerate() {
            // SAFETY: per the contract, kernelParams[i] points to parameter i, `size` bytes.
            unsafe {
                let src = *kernelParams.add(i);
                if src.is_null() {
                    return Err(CuError::INVALID_VALUE);
                }
                std::ptr::copy_nonoverlapping(
                    src.cast::<u8>(),
                    packed.as_mut_ptr().add(offset as usize),
                    size as usize,
                );
            }
        }
        enc.put(FORM_POINTERS);
        enc.put_bytes(&packed);
        enc.put(layout.len() as u32);
        for &(offset, size) in layout.iter() {
            enc.put(offset);
            enc.put(size);
        }
        return Ok(());
    }
    if !extra.is_null() {
        let (mut buffer, mut size): (*const u8, Option<usize>) = (std::ptr::null(), None);
        for i in (0..64).step_by(2) {
            // SAFETY: per the contract, `extra` is a key/value list ending with END.
            let key = unsafe { *extra.add(i) } as usize;
            match key as u32 {
                CU_LAUNCH_PARAM_END_AS_INT => break,
                CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT => {
                    // SAFETY: as above; the value follows its key.
                    buffer = unsafe { *extra.add(i + 1) }.cast()
                }
                CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT => {
                    // SAFETY: BUFFER_SIZE's value points to a size_t.
                    size = Some(unsafe { *(*extra.add(i + 1)).cast::<usize>() })
                }
                _ => return Err(CuError::INVALID_VALUE),
            }
        }
        let (Some(size), false) = (size, buffer.is_null()) else {
            return Err(CuError::INVALID_VALUE);
        };
        enc.put(FORM_EXTRA);
        // SAFETY: BUFFER_POINTER holds BUFFER_SIZE bytes.
        enc.put_bytes(unsafe { std::slice::from_raw_parts(buffer, size) });
        enc.put(0u32);
        return Ok(());
    }
    enc.put(FORM_NONE);
    enc.put_bytes(&[]);
    enc.put(0u32);
    Ok(())
}

fn put_dims(enc: &mut Encoder<'_>, grid: [u32; 3], block: [u32; 3], shared: u32, stream: CUstream) {
    for v in grid.into_iter().chain(block).chain([shared]) {
        enc.put(v);
    }
    enc.put(stream as u64);
}

/// Sends a launch: posted when `postable` (see [`crate::posted`]), else a call.
fn send_launch(id: u32, postable: bool, encode: impl FnOnce(&mut Encoder<'_>)) -> CuResult {
    if postable {
        post(id, encode)
    } else {
        call_with(id, encode, |_| Ok(()))
    }
}

/// # Safety
/// As [`put_params`].
#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    id: u32,
    postable: bool,
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: CUstream,
    kernelParams: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    // Pack first: the layout query is a call of its own on this thread's channel.
    let mut params = Vec::new();
    // SAFETY: per the contract.
    unsafe {
        put_params(
            &mut Encoder::new(&mut params),
            f as u64,
            kernelParams,
            extra,
        )
    }?;
    send_launch(id, postable, |enc| {
        enc.put(f as u64);
        put_dims(enc, grid, block, shared, stream);
        enc.put_raw_bytes(&params);
    })
}

macro_rules! launch_fns {
    ($($name:ident),*) => { $(
        /// Launches a kernel; parameters are packed from the host driver's layout. Posted (see
        /// [`crate::posted`]): a failure shows at this thread's next synchronous call.
        ///
        /// # Safety
        /// The driver API's contract for kernel parameters.
        ///
        /// # Errors
        /// The host's result (or an earlier posted call's), a bad parameter list.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(f: CUfunction, gridDimX: u32, gridDimY: u32, gridDimZ: u32, blockDimX: u32, blockDimY: u32, blockDimZ: u32, sharedMemBytes: u32, hStream: CUstream, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CuResult {
            // SAFETY: per the contract.
            unsafe { launch(shim_macros::cuda_call_id!($name), true, f, [gridDimX, gridDimY, gridDimZ], [blockDimX, blockDimY, blockDimZ], sharedMemBytes, hStream, kernelParams, extra) }
        }
    )* };
}
macro_rules! cooperative_fns {
    ($($name:ident),*) => { $(
        /// Launches a cooperative kernel.
        ///
        /// # Safety
        /// The driver API's contract for kernel parameters.
        ///
        /// # Errors
        /// The host's result.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(f: CUfunction, gridDimX: u32, gridDimY: u32, gridDimZ: u32, blockDimX: u32, blockDimY: u32, blockDimZ: u32, sharedMemBytes: u32, hStream: CUstream, kernelParams: *mut *mut c_void) -> CuResult {
            // SAFETY: per the contract.
            unsafe { launch(shim_macros::cuda_call_id!($name), false, f, [gridDimX, gridDimY, gridDimZ], [blockDimX, blockDimY, blockDimZ], sharedMemBytes, hStream, kernelParams, std::ptr::null_mut()) }
        }
    )* };
}
macro_rules! launch_ex_fns {
    ($($name:ident),*) => { $(
        /// Launches with a configuration and attributes; posted when every attribute is a plain
        /// scheduling input (see [`postable_attributes`]).
        ///
        /// # Safety
        /// `config` is valid; the driver API's contract for kernel parameters.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(config: *const CUlaunchConfig, f: CUfunction, kernelParams: *mut *mut c_void, extra: *mut *mut c_void) -> CuResult {
            // SAFETY: per the contract.
            unsafe { launch_ex(shim_macros::cuda_call_id!($name), config, f, kernelParams, extra) }
        }
    )* };
}
launch_fns!(cuLaunchKernel, cuLaunchKernel_ptsz);
cooperative_fns!(cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz);
launch_ex_fns!(cuLaunchKernelEx, cuLaunchKernelEx_ptsz);

/// Whether a launch with these attributes may be posted: each is a plain input that only shapes
/// how the kernel is scheduled. Attributes naming events, cooperative launches and anything
/// newer stay synchronous.
fn postable_attributes(attrs: &[CUlaunchAttribute]) -> bool {
    attrs.iter().all(|a| {
        matches!(
            a.id,
            CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_IGNORE
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP
                | CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN
        )
    })
}

/// # Safety
/// As [`put_params`]; `config` is valid.
unsafe fn launch_ex(
    id: u32,
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernelParams: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    // SAFETY: per the contract.
    let c = unsafe { config.as_ref() }.ok_or(CuError::INVALID_VALUE)?;
    let attrs: &[CUlaunchAttribute] = if c.numAttrs == 0 || c.attrs.is_null() {
        &[]
    } else {
        // SAFETY: per the contract, `attrs` holds `numAttrs` entries.
        unsafe { std::slice::from_raw_parts(c.attrs, c.numAttrs as usize) }
    };
    let mut params = Vec::new();
    // SAFETY: per the contract.
    unsafe {
        put_params(
            &mut Encoder::new(&mut params),
            f as u64,
            kernelParams,
            extra,
        )
    }?;
    send_launch(id, postable_attributes(attrs), |enc| {
        enc.put(f as u64);
        put_dims(
            enc,
            [c.gridDimX, c.gridDimY, c.gridDimZ],
            [c.blockDimX, c.blockDimY, c.blockDimZ],
            c.sharedMemBytes,
            c.hStream,
        );
        enc.put(attrs.len() as u32);
        for attr in attrs {
            // SAFETY: CUlaunchAttribute is plain data (ids, integers, handles, device addresses).
            unsafe { enc.put_raw(attr) };
        }
        enc.put_raw_bytes(&params);
    })
}
