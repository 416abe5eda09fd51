//! What the guest cdylibs (`libvgpu-cuda.so`, the shim, and `libvgpu-nvml.so`, the NVML facade)
//! share:
//!
//! - [`log`]: the one-line stderr logger, `<prefix>[<pid>]: <level>: <message>`, filtered by
//!   `VGPU_LOG`; each library owns a [`log::Logger`] with its own prefix;
//! - [`link`]: what their `build.rs` tells the linker (the soname, and no `libgcc_s.so.1`), used
//!   as a build-dependency.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod link;
pub mod log;
