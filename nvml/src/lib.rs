//! `libvgpu-nvml.so`, an NVML facade with soname `libnvidia-ml.so.1`, for guests without a GPU.
//!
//! GPU tools and Ollama read the driver version, device names, UUIDs, PCI addresses and memory
//! through NVML. This library answers the common NVML calls for the devices the guest sees
//! (after `CUDA_VISIBLE_DEVICES`) with the host GPU's values:
//!
//! - device facts come from the CUDA driver API of `libcuda.so.1`, opened with `dlopen` at the
//!   first `nvmlInit*` ([`cuda`]): in a vgpu guest that is the preloaded shim, so every value is
//!   the host driver's, and the shim's device filtering applies;
//! - what the driver API does not tell (the kernel driver's version, PCI vendor/device ids, minor
//!   numbers) comes from the host worker through the special call `NVML_FACTS`, on a connection
//!   of its own opened the first time one of those values is asked for ([`host`]).
//!
//! Loading the library runs nothing (no constructor); every export runs inside `catch_unwind`,
//! so nothing unwinds into C. Functions in [`unsupported`] answer `NVML_ERROR_NOT_SUPPORTED`.
//! See docs/nvml.md.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cuda;
pub mod exports;
pub mod format;
pub mod host;
pub mod log;
pub mod processes;
pub mod state;
pub mod types;
pub mod unsupported;
