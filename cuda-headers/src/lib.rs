//! CUDA driver-API types and the signature list, generated from `cuda.h` by `cuda-headers-generate`
//! (see docs/headers.md).
//!
//! - `src/generated/cuda.rs` (re-exported at the crate root): every type, and every driver
//!   function in one sorted `extern "system"` block: the list the shim macros expand.
//! - [`supplement`]: the few exports that no header declares.
//! - [`results`]: the `CUresult` names and strings as the real driver gives them, parsed at compile
//!   time from the table read on the GPU machine (`probe/errstrings-580.159.04.tsv`);
//!   [`versions`]: `cuGetProcAddress` version data.
//! - [`proc_address`]: the real driver's `cuGetProcAddress_v2` answers, probed on the GPU machine.
//!
//! The `extern` declarations are never called from Rust (nothing links the real driver here); they
//! exist as the machine-readable signature list.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    // bindgen's `Default` impls zero the struct in an uncommented `unsafe` block: all-zero is a
    // valid value of every plain C struct it generates.
    clippy::undocumented_unsafe_blocks
)]
mod bindings {
    include!("generated/cuda.rs");
}

pub use bindings::*;

#[allow(non_camel_case_types, non_snake_case)]
pub mod supplement;

pub mod cu_result;
#[path = "generated/proc_address.rs"]
pub mod proc_address;
pub mod results;
pub mod versions;

pub use cu_result::{CuError, CuResult};
pub use supplement::{CUoutput_mode, CUoutput_mode_enum};

/// Path of the signature file, relative to this crate's manifest directory.
pub const SIGNATURE_FILE: &str = "src/generated/cuda.rs";
/// Path of the supplementary signature list, relative to this crate's manifest directory.
pub const SUPPLEMENT_FILE: &str = "src/supplement.rs";
