//! Node parameters read back (`cuGraph*NodeGetParams`), with guest storage for what the driver
//! would hand out.

#![allow(non_snake_case)]

use super::*;

/// Kernel parameters handed out by `cuGraphKernelNodeGetParams_v2`, per node: the packed bytes
/// and a pointer per parameter into them (as addresses, so the table is `Send`).
static KERNEL_PARAMS: Mutex<Option<HashMap<u64, KernelParamsCopy>>> = Mutex::new(None);

/// Packed parameter bytes and each parameter's address in them.
type KernelParamsCopy = (Vec<u8>, Vec<usize>);

/// A kernel node's parameters. `kernelParams` points to guest storage that stays valid until
/// the next query of the same node; `extra` is NULL.
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphKernelNodeGetParams_v2(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_KERNEL_NODE_PARAMS,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphKernelNodeGetParams_v2),
        |enc| enc.put(hNode as u64),
        |dec| {
            let get = |d: &mut Decoder<'_>| d.get::<u64>().map_err(bad_response);
            let get32 = |d: &mut Decoder<'_>| d.get::<u32>().map_err(bad_response);
            let (func, kern, ctx) = (get(dec)?, get(dec)?, get(dec)?);
            let mut dims = [0u32; 7];
            for d in &mut dims {
                *d = get32(dec)?;
            }
            let mut packed = dec.get_bytes().map_err(bad_response)?.to_vec();
            let n = get32(dec)? as usize;
            let mut pointers = Vec::with_capacity(n);
            for _ in 0..n {
                let (offset, size) = (get32(dec)? as usize, get32(dec)? as usize);
                if offset + size > packed.len() {
                    return Err(CuError::UNKNOWN);
                }
                pointers.push(packed.as_mut_ptr() as usize + offset);
            }
            let kernel_params = if pointers.is_empty() {
                std::ptr::null_mut()
            } else {
                pointers.as_mut_ptr().cast::<*mut c_void>()
            };
            // Moving the vectors into the table keeps their heap buffers where they are.
            KERNEL_PARAMS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(hNode as u64, (packed, pointers));
            write(
                nodeParams,
                CUDA_KERNEL_NODE_PARAMS {
                    func: func as usize as CUfunction,
                    gridDimX: dims[0],
                    gridDimY: dims[1],
                    gridDimZ: dims[2],
                    blockDimX: dims[3],
                    blockDimY: dims[4],
                    blockDimZ: dims[5],
                    sharedMemBytes: dims[6],
                    kernelParams: kernel_params,
                    extra: std::ptr::null_mut(),
                    kern: kern as usize as CUkernel,
                    ctx: ctx as usize as CUcontext,
                },
            );
            Ok(())
        },
    )
}

/// A memcpy node's parameters.
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphMemcpyNodeGetParams(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_MEMCPY3D,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphMemcpyNodeGetParams),
        |enc| enc.put(hNode as u64),
        |dec| {
            // SAFETY: the host sends one CUDA_MEMCPY3D with its host pointers cleared.
            let copy: CUDA_MEMCPY3D = unsafe { dec.get_raw() }.map_err(bad_response)?;
            write(nodeParams, copy);
            Ok(())
        },
    )
}

/// A host node's function and data (the guest's own values).
///
/// # Safety
/// `nodeParams` is valid for one write.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphHostNodeGetParams(
    hNode: CUgraphNode,
    nodeParams: *mut CUDA_HOST_NODE_PARAMS,
) -> CuResult {
    if nodeParams.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    call_with(
        shim_macros::cuda_call_id!(cuGraphHostNodeGetParams),
        |enc| enc.put(hNode as u64),
        |dec| {
            let func: u64 = dec.get().map_err(bad_response)?;
            let data: u64 = dec.get().map_err(bad_response)?;
            // SAFETY: `func` is the CUhostFn this process registered for the node (or 0).
            let fn_: CUhostFn = unsafe { std::mem::transmute::<usize, CUhostFn>(func as usize) };
            write(
                nodeParams,
                CUDA_HOST_NODE_PARAMS {
                    fn_,
                    userData: data as usize as *mut c_void,
                },
            );
            Ok(())
        },
    )
}
