//! Functions the shim answers itself (`custom` in `exports.rs`). Each is an `unsafe fn` with the
//! exported function's parameters, returning `CuResult`.

mod errors;

pub use errors::{cuGetErrorName, cuGetErrorString};
