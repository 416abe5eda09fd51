//! Functions the shim answers with hand-written code (`custom` in `exports.rs`): local answers
//! (error strings) and the guest halves of calls whose arguments the header cannot describe.
//! Each is an `unsafe fn` with the exported function's parameters, returning `CuResult`.

mod context;
mod device;
mod devices;
mod errors;
mod hostfn;
pub(crate) mod launch;
mod memory;
mod module;

pub use context::*;
pub use device::{cuDeviceGetName, cuDeviceGetPCIBusId};
pub use devices::{cuDeviceGet, cuDeviceGetByPCIBusId, cuDeviceGetCount, cuInit};
pub use errors::{cuGetErrorName, cuGetErrorString};
pub use hostfn::*;
pub use launch::{
    cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, cuLaunchKernel, cuLaunchKernelEx,
    cuLaunchKernelEx_ptsz, cuLaunchKernel_ptsz,
};
pub use memory::*;
pub use module::*;
pub use crate::runtime_api::{
    cuCtxDestroy, cuCtxDestroy_v2, cuDevicePrimaryCtxReset, cuDevicePrimaryCtxReset_v2,
    cuDriverGetVersion, cuGetExportTable, cuGetProcAddress, cuGetProcAddress_v2,
};
