//! Hand-written host halves of the functions whose arguments the header cannot describe:
//! buffers with a length, host pointers in memcpy, strings, module images, kernel parameters and
//! callbacks. The call table (`shim-macros/src/calls.rs`) routes each name to its half here and
//! names its guest half in the shim; each function's wire format is written once, above its host
//! half.

mod arrays;
mod capture;
mod context;
mod device;
mod device_caps;
mod export_tables;
mod graph;
mod hostfn;
mod ipc;
mod launch;
mod library;
mod link;
mod managed;
mod memory;
pub mod mirror;
mod module;
mod nvml_facts;
mod occupancy;
mod pointer;
mod pool;
mod profiler;
mod quota;
mod resource_objects;
mod tensor_map;
mod vmm;
mod zero_copy;

use std::sync::Arc;

use cuda_headers::CUresult;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::ClientContext;

pub use export_tables::unit_maps;
pub use launch::{param_layout, Layouts};
pub use mirror::Mirrors;
pub use nvml_facts::{nvml_facts, nvml_memory};
pub use zero_copy::Registrations;

/// The template `shim_macros::call_routes!` fills from the call table
/// (`shim-macros/src/calls.rs`): every name with a host half, sorted by wire call id. A handler
/// takes `(call name, &Arc<ClientContext>, &mut Decoder, &mut Vec<u8>)`.
macro_rules! routes {
    ($({ id: $id:literal, name: $name:ident, host: $handler:path })*) => {
        /// Runs hand-written handler `id`, or returns `None` when there is none.
        pub fn dispatch(
            id: u32,
            client: &Arc<ClientContext>,
            dec: &mut Decoder<'_>,
            out: &mut Vec<u8>,
        ) -> Option<Result<(), DecodeError>> {
            Some(match id {
                $($id => $handler(stringify!($name), client, dec, out),)*
                _ => return None,
            })
        }
    };
}

shim_macros::call_routes!(routes);

/// Every driver function's name, sorted: a name's index is its wire call id.
const CALL_NAMES: &[&str] = shim_macros::cuda_function_names!();

/// The wire call id of the function a route was called as (`routes!` hands over its name).
fn call_id(name: &str) -> u32 {
    CALL_NAMES
        .binary_search(&name)
        .expect("routes! names only functions of the signature list") as u32
}

/// Runs the generated host half of the function a hand-written half wraps (same wire format),
/// gate included; `CUDA_ERROR_NOT_SUPPORTED` when it has none.
fn generated_half(
    name: &str,
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    crate::dispatch::generated::dispatch(call_id(name), client.handles(), dec, out).unwrap_or_else(
        || {
            respond(out, CUresult::CUDA_ERROR_NOT_SUPPORTED);
            Ok(())
        },
    )
}

/// Writes a response that is only a result code.
fn respond(out: &mut Vec<u8>, result: CUresult) {
    ResponseHeader::start(out, result.0);
}

/// The pointer the driver writes an optional out-value of the generated wire format through
/// (NULL when the guest passed none).
fn out_ptr<T>(value: &mut Option<T>) -> *mut T {
    value
        .as_mut()
        .map_or(std::ptr::null_mut(), std::ptr::from_mut)
}

/// The pointer the driver reads an optional input of the generated wire format through (NULL
/// when the guest passed none).
fn in_ptr<T>(value: &Option<T>) -> *const T {
    value.as_ref().map_or(std::ptr::null(), std::ptr::from_ref)
}

/// Writes an out-value back as the generated marshalling does: its bytes when the guest passed
/// the pointer, nothing otherwise. Only for plain C types decoded from the request.
fn put_present<T: Copy>(enc: &mut protocol::Encoder<'_>, value: &Option<T>) {
    if let Some(v) = value {
        // SAFETY: `T` is a plain C type (handles, enums, structs of them), decoded from bytes.
        unsafe { enc.put_raw(v) }
    }
}

/// Resolves a real function or answers `CUDA_ERROR_NOT_SUPPORTED` (with one log line) from the
/// enclosing handler.
macro_rules! real_or_unsupported {
    ($name:ident, $out:ident) => {
        match $crate::driver::real::$name() {
            Some(f) => f,
            None => {
                $crate::dispatch::missing(stringify!($name), $out);
                return Ok(());
            }
        }
    };
}
pub(crate) use real_or_unsupported;

/// Limits on sizes a guest may ask the host to allocate for an answer.
pub const MAX_NAME: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn a_routes_name_gives_its_wire_call_id() {
        assert_eq!(
            super::call_id("cuMemAlloc_v2"),
            shim_macros::cuda_call_id!(cuMemAlloc_v2)
        );
        assert_eq!(
            super::call_id("cuLibraryUnload"),
            shim_macros::cuda_call_id!(cuLibraryUnload)
        );
    }
}
