//! Hand-written host halves of the functions whose arguments the header cannot describe:
//! buffers with a length, host pointers in memcpy, strings, module images, kernel parameters and
//! callbacks. Each guest half lives in `shim/src/handlers/` under the same module name, and each
//! function's wire format is written once, above its host half.

mod context;
mod device;
mod hostfn;
mod launch;
mod memory;
mod module;

use std::sync::Arc;

use cuda_headers::CUresult;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::ClientContext;

pub use launch::param_layout;

/// Maps call ids to handlers: `name | name => handler`, where a handler takes
/// `(call name, &Arc<ClientContext>, &mut Decoder, &mut Vec<u8>)`.
macro_rules! routes {
    ($($($name:ident)|+ => $handler:path),* $(,)?) => {
        /// Runs hand-written handler `id`, or returns `None` when there is none.
        pub fn dispatch(
            id: u32,
            client: &Arc<ClientContext>,
            dec: &mut Decoder<'_>,
            out: &mut Vec<u8>,
        ) -> Option<Result<(), DecodeError>> {
            $($(
                if id == shim_macros::cuda_call_id!($name) {
                    return Some($handler(stringify!($name), client, dec, out));
                }
            )+)*
            None
        }
    };
}

routes! {
    cuDeviceGetName => device::get_name,
    cuDeviceGetPCIBusId => device::get_pci_bus_id,
    cuDeviceGetByPCIBusId => device::get_by_pci_bus_id,
    cuCtxCreate_v3 => context::create_v3,
    cuCtxCreate_v4 => context::create_v4,
    cuMemcpyHtoD | cuMemcpyHtoD_v2 | cuMemcpyHtoD_v2_ptds => memory::htod,
    cuMemcpyHtoDAsync | cuMemcpyHtoDAsync_v2 | cuMemcpyHtoDAsync_v2_ptsz => memory::htod,
    cuMemcpyDtoH | cuMemcpyDtoH_v2 | cuMemcpyDtoH_v2_ptds => memory::dtoh,
    cuMemcpyDtoHAsync | cuMemcpyDtoHAsync_v2 | cuMemcpyDtoHAsync_v2_ptsz => memory::dtoh,
    cuMemcpy | cuMemcpy_ptds | cuMemcpyAsync | cuMemcpyAsync_ptsz => memory::unified,
    cuMemcpy2D_v2 | cuMemcpy2D_v2_ptds | cuMemcpy2DUnaligned_v2
        | cuMemcpy2DUnaligned_v2_ptds | cuMemcpy2DAsync_v2 | cuMemcpy2DAsync_v2_ptsz => memory::copy_2d,
    cuMemcpy3D_v2 | cuMemcpy3D_v2_ptds | cuMemcpy3DAsync_v2 | cuMemcpy3DAsync_v2_ptsz => memory::copy_3d,
    cuPointerGetAttribute => memory::pointer_attribute,
    cuModuleLoadData | cuModuleLoadFatBinary => module::load_data,
    cuModuleLoadDataEx => module::load_data_ex,
    cuModuleGetFunction => module::get_function,
    cuModuleGetGlobal_v2 => module::get_global,
    cuLibraryLoadData => module::library_load_data,
    cuLibraryGetKernel => module::library_get_kernel,
    cuLibraryGetGlobal => module::library_get_global,
    cuFuncGetName | cuKernelGetName => module::get_name,
    cuLaunchKernel | cuLaunchKernel_ptsz => launch::launch_kernel,
    cuLaunchCooperativeKernel | cuLaunchCooperativeKernel_ptsz => launch::launch_kernel,
    cuLaunchKernelEx | cuLaunchKernelEx_ptsz => launch::launch_kernel_ex,
    cuLaunchHostFunc | cuLaunchHostFunc_ptsz => hostfn::launch_host_func,
    cuStreamAddCallback | cuStreamAddCallback_ptsz => hostfn::stream_add_callback,
    // Handlers for what real stacks touch (graphs, pools, attributes, VMM, linking).
    // -- stacks routes end --
}

/// Writes a response that is only a result code.
fn respond(out: &mut Vec<u8>, result: CUresult) {
    ResponseHeader::start(out, result.0);
}

/// Resolves a real function or answers `CUDA_ERROR_NOT_SUPPORTED` (with one log line) from the
/// enclosing handler.
macro_rules! real_or_unsupported {
    ($name:ident, $out:ident) => {
        match $crate::dispatch::real::$name() {
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
