//! Functions the shim answers with hand-written code: local answers (error strings) and the
//! guest halves of calls whose arguments the header cannot describe. The call table
//! (`shim-macros/src/calls.rs`) names each one's module; the export calls
//! `handlers::<module>::<name>`, an `unsafe fn` with the exported function's parameters returning
//! `CuResult`. A half the table does not name is dead code, which the build refuses.

pub(crate) mod arrays;
pub(crate) mod cached;
pub(crate) mod capture;
pub(crate) mod context;
pub(crate) mod device;
pub(crate) mod device_caps;
pub(crate) mod devices;
pub(crate) mod errors;
pub(crate) mod graph;
pub(crate) mod host_register;
pub(crate) mod hostfn;
pub(crate) mod launch;
pub(crate) mod library;
pub(crate) mod link;
pub(crate) mod managed;
pub(crate) mod memory;
pub(crate) mod memset;
pub(crate) mod module;
pub(crate) mod occupancy;
pub(crate) mod pointer;
pub(crate) mod pool;
pub(crate) mod profiler;
pub(crate) mod staged;
pub(crate) mod tensor_map;
pub(crate) mod vmm;
pub(crate) mod zero_copy;
