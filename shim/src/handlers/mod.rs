//! Functions the shim answers with hand-written code (`custom` in `exports.rs`): local answers
//! (error strings) and the guest halves of calls whose arguments the header cannot describe.
//! Each is an `unsafe fn` with the exported function's parameters, returning `CuResult`.

mod arrays;
pub(crate) mod cached;
mod capture;
mod context;
mod device;
mod device_caps;
mod devices;
mod errors;
mod graph;
mod host_register;
mod hostfn;
pub(crate) mod launch;
mod library;
mod link;
mod memory;
mod memset;
mod module;
mod occupancy;
mod pointer;
mod pool;
mod profiler;
mod staged;
mod tensor_map;
mod vmm;
mod zero_copy;

pub use crate::runtime_api::{
    cuCtxDestroy, cuCtxDestroy_v2, cuDevicePrimaryCtxReset, cuDevicePrimaryCtxReset_v2,
    cuDriverGetVersion, cuGetExportTable, cuGetProcAddress, cuGetProcAddress_v2,
};
pub use cached::*;
pub use capture::*;
pub use context::*;
pub use device::{cuDeviceGetName, cuDeviceGetPCIBusId};
pub use device_caps::*;
pub use devices::{cuDeviceGet, cuDeviceGetByPCIBusId, cuDeviceGetCount, cuInit};
pub use errors::{cuGetErrorName, cuGetErrorString};
pub use graph::*;
pub use host_register::*;
pub use hostfn::*;
pub use launch::{
    cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, cuLaunchKernel, cuLaunchKernelEx,
    cuLaunchKernelEx_ptsz, cuLaunchKernel_ptsz,
};
pub use library::*;
pub use link::*;
pub use memory::*;
pub use memset::*;
pub use module::*;
pub use occupancy::*;
pub use pointer::*;
pub use pool::*;
pub use profiler::*;
pub use tensor_map::*;
pub use vmm::*;
