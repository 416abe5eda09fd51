//! What unmodified CUDA runtimes (cudart, and the stacks built on it) need from the driver before
//! they call any exported name: `cuGetProcAddress` answered from the probed driver's table,
//! `cuGetExportTable` with guest-local tables, `cuDriverGetVersion`, and the context-local
//! storage destructors that primary-context reset and context destruction must run.
//! See docs/runtime-api.md.
#![allow(non_snake_case)]

pub mod context_storage;
pub mod driver_version;
pub mod export_tables;
pub mod integrity;
pub mod primary_context;
pub mod proc_address;

pub use driver_version::cuDriverGetVersion;
pub use export_tables::cuGetExportTable;
pub use primary_context::{
    cuCtxDestroy, cuCtxDestroy_v2, cuDevicePrimaryCtxReset, cuDevicePrimaryCtxReset_v2,
};
pub use proc_address::{cuGetProcAddress, cuGetProcAddress_v2};
