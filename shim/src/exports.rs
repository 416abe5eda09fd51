//! Every driver-API export, generated from the signature list by `shim_macros::cuda_functions!`
//! through the [`stub`](crate::stub) template.
#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

#[allow(unused_imports)]
use cuda_headers::supplement::*;
#[allow(unused_imports)]
use cuda_headers::*;

use crate::stub::stub;

shim_macros::cuda_functions!(
    stub,
    custom
        <= [
            cuGetErrorName,
            cuGetErrorString,
            cuDeviceGetName,
            cuDeviceGetPCIBusId,
            cuDeviceGetByPCIBusId,
            cuCtxCreate_v3,
            cuCtxCreate_v4,
            cuMemcpyHtoD_v2,
            cuMemcpyHtoD_v2_ptds,
            cuMemcpyHtoDAsync_v2,
            cuMemcpyHtoDAsync_v2_ptsz,
            cuMemcpyDtoH_v2,
            cuMemcpyDtoH_v2_ptds,
            cuMemcpyDtoHAsync_v2,
            cuMemcpyDtoHAsync_v2_ptsz,
            cuMemcpy,
            cuMemcpy_ptds,
            cuMemcpyAsync,
            cuMemcpyAsync_ptsz,
            cuMemcpy2D_v2,
            cuMemcpy2D_v2_ptds,
            cuMemcpy2DUnaligned_v2,
            cuMemcpy2DUnaligned_v2_ptds,
            cuMemcpy2DAsync_v2,
            cuMemcpy2DAsync_v2_ptsz,
            cuMemcpy3D_v2,
            cuMemcpy3D_v2_ptds,
            cuMemcpy3DAsync_v2,
            cuMemcpy3DAsync_v2_ptsz,
            cuPointerGetAttribute,
            cuMemAllocHost_v2,
            cuMemHostAlloc,
            cuMemFreeHost,
            cuMemHostGetFlags,
            cuModuleLoad,
            cuModuleLoadData,
            cuModuleLoadFatBinary,
            cuModuleLoadDataEx,
            cuModuleGetFunction,
            cuModuleGetGlobal_v2,
            cuModuleUnload,
            cuLibraryLoadData,
            cuLibraryLoadFromFile,
            cuLibraryGetKernel,
            cuLibraryGetGlobal,
            cuLibraryUnload,
            cuFuncGetName,
            cuKernelGetName,
            cuLaunchKernel,
            cuLaunchKernel_ptsz,
            cuLaunchCooperativeKernel,
            cuLaunchCooperativeKernel_ptsz,
            cuLaunchKernelEx,
            cuLaunchKernelEx_ptsz,
            cuLaunchHostFunc,
            cuLaunchHostFunc_ptsz,
            cuStreamAddCallback,
            cuStreamAddCallback_ptsz,
            // Runtime entry points (shim/src/runtime_api, docs/runtime-api.md).
            cuGetProcAddress,
            cuGetProcAddress_v2,
            cuGetExportTable,
            cuDriverGetVersion,
            cuDevicePrimaryCtxReset,
            cuDevicePrimaryCtxReset_v2,
            cuCtxDestroy,
            cuCtxDestroy_v2,
            // -- runtime-api list end --
        ]
);
