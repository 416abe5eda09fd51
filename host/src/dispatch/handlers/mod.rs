//! Hand-written host halves of the functions whose arguments the header cannot describe:
//! buffers with a length, host pointers in memcpy, strings, module images, kernel parameters and
//! callbacks. Each guest half lives in `shim/src/handlers/` under the same module name, and each
//! function's wire format is written once, above its host half.

mod arrays;
mod capture;
mod context;
mod device;
mod device_caps;
mod export_tables;
mod graph;
mod hostfn;
mod launch;
mod library;
mod link;
mod memory;
mod module;
mod nvml_facts;
mod occupancy;
mod pointer;
mod pool;
mod profiler;
mod quota;
mod tensor_map;
mod vmm;
mod zero_copy;

use std::sync::Arc;

use cuda_headers::CUresult;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::ClientContext;

pub use export_tables::unit_maps;
pub use launch::{param_layout, Layouts};
pub use nvml_facts::{nvml_facts, nvml_memory};
pub use zero_copy::Registrations;

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
    cuCtxCreate_v2 => context::create_v2,
    cuCtxDestroy | cuCtxDestroy_v2 => context::destroy,
    cuMemcpyHtoD | cuMemcpyHtoD_v2 | cuMemcpyHtoD_v2_ptds => memory::htod,
    cuMemcpyHtoDAsync | cuMemcpyHtoDAsync_v2 | cuMemcpyHtoDAsync_v2_ptsz => memory::htod,
    cuMemcpyDtoH | cuMemcpyDtoH_v2 | cuMemcpyDtoH_v2_ptds => memory::dtoh,
    cuMemcpyDtoHAsync | cuMemcpyDtoHAsync_v2 | cuMemcpyDtoHAsync_v2_ptsz => memory::dtoh,
    cuMemcpy | cuMemcpy_ptds | cuMemcpyAsync | cuMemcpyAsync_ptsz => memory::unified,
    cuMemcpy2D_v2 | cuMemcpy2D_v2_ptds | cuMemcpy2DUnaligned_v2
        | cuMemcpy2DUnaligned_v2_ptds | cuMemcpy2DAsync_v2 | cuMemcpy2DAsync_v2_ptsz => memory::copy_2d,
    cuMemcpy3D_v2 | cuMemcpy3D_v2_ptds | cuMemcpy3DAsync_v2 | cuMemcpy3DAsync_v2_ptsz => memory::copy_3d,
    cuPointerGetAttribute => memory::pointer_attribute,
    cuMemAlloc_v2 | cuMemAllocPitch_v2 | cuMemAllocAsync | cuMemAllocAsync_ptsz
        | cuMemAllocFromPoolAsync | cuMemAllocFromPoolAsync_ptsz => quota::alloc,
    cuMemFree_v2 | cuMemFreeAsync | cuMemFreeAsync_ptsz | cuMemRelease => quota::free,
    cuMemGetInfo_v2 => quota::get_info,
    cuMemHostAlloc => zero_copy::alloc,
    cuMemFreeHost => zero_copy::free,
    cuModuleLoadData | cuModuleLoadFatBinary => module::load_data,
    cuModuleLoadDataEx => module::load_data_ex,
    cuModuleGetFunction => module::get_function,
    cuModuleGetGlobal_v2 => module::get_global,
    cuLibraryLoadData => module::library_load_data,
    cuLibraryGetKernel => module::library_get_kernel,
    cuLibraryGetGlobal => module::library_get_global,
    cuFuncGetName | cuKernelGetName => module::get_name,
    cuLaunchKernel | cuLaunchKernel_ptsz => launch::launch_kernel,
    cuModuleUnload | cuLibraryUnload => launch::unload,
    cuLaunchCooperativeKernel | cuLaunchCooperativeKernel_ptsz => launch::launch_kernel,
    cuLaunchKernelEx | cuLaunchKernelEx_ptsz => launch::launch_kernel_ex,
    cuLaunchHostFunc | cuLaunchHostFunc_ptsz => hostfn::launch_host_func,
    cuStreamAddCallback | cuStreamAddCallback_ptsz => hostfn::stream_add_callback,
    cuTensorMapEncodeTiled => tensor_map::encode_tiled,
    cuTensorMapEncodeIm2col => tensor_map::encode_im2col,
    cuTensorMapReplaceAddress => tensor_map::replace_address,
    // Handlers for what real stacks touch (graphs, pools, attributes, VMM, linking).
    cuStreamGetCaptureInfo_v2 | cuStreamGetCaptureInfo_v2_ptsz | cuStreamGetCaptureInfo_v3
        | cuStreamGetCaptureInfo_v3_ptsz => capture::capture_info,
    cuStreamUpdateCaptureDependencies | cuStreamUpdateCaptureDependencies_ptsz
        | cuStreamUpdateCaptureDependencies_v2
        | cuStreamUpdateCaptureDependencies_v2_ptsz => capture::update_dependencies,
    cuStreamBeginCaptureToGraph | cuStreamBeginCaptureToGraph_ptsz => capture::begin_capture_to_graph,
    cuStreamGetAttribute | cuStreamGetAttribute_ptsz | cuGraphKernelNodeGetAttribute => capture::get_attribute,
    cuStreamSetAttribute | cuStreamSetAttribute_ptsz | cuGraphKernelNodeSetAttribute => capture::set_attribute,
    cuGraphGetNodes | cuGraphGetRootNodes | cuGraphGetEdges | cuGraphGetEdges_v2
        | cuGraphNodeGetDependencies | cuGraphNodeGetDependencies_v2
        | cuGraphNodeGetDependentNodes | cuGraphNodeGetDependentNodes_v2 => graph::query,
    cuGraphAddDependencies | cuGraphAddDependencies_v2 | cuGraphRemoveDependencies
        | cuGraphRemoveDependencies_v2 => graph::edges,
    cuGraphAddKernelNode_v2 | cuGraphAddMemcpyNode | cuGraphAddMemsetNode | cuGraphAddEmptyNode
        | cuGraphAddEventRecordNode | cuGraphAddEventWaitNode | cuGraphAddHostNode
        | cuGraphAddNode | cuGraphAddNode_v2 => graph::add_node,
    cuGraphNodeSetParams | cuGraphExecNodeSetParams | cuGraphKernelNodeSetParams_v2
        | cuGraphExecKernelNodeSetParams_v2 | cuGraphMemcpyNodeSetParams
        | cuGraphExecMemcpyNodeSetParams | cuGraphHostNodeSetParams
        | cuGraphExecHostNodeSetParams => graph::set_node,
    cuGraphKernelNodeGetParams_v2 => graph::kernel_get_params,
    cuGraphMemcpyNodeGetParams => graph::memcpy_get_params,
    cuGraphHostNodeGetParams => graph::host_get_params,
    cuGraphInstantiate | cuGraphInstantiate_v2 => graph::instantiate,
    cuGraphDebugDotPrint => graph::dot_print,
    cuPointerGetAttributes => pointer::attributes,
    cuMemPoolGetAttribute | cuDeviceGetGraphMemAttribute => pool::get_sized,
    cuMemPoolSetAttribute | cuDeviceSetGraphMemAttribute => pool::set_sized,
    cuMemPoolCreate => pool::create,
    cuMemPoolSetAccess | cuMemSetAccess => pool::set_access,
    cuMemRangeGetAttribute | cuMemRangeGetAttributes => pool::range_attributes,
    cuDeviceGetTexture1DLinearMaxWidth => device_caps::texture_1d_linear_max_width,
    cuDeviceGetHostAtomicCapabilities | cuDeviceGetP2PAtomicCapabilities => device_caps::atomic_capabilities,
    cuOccupancyMaxPotentialBlockSize | cuOccupancyMaxPotentialBlockSizeWithFlags => occupancy::potential_block_size,
    cuOccupancyAvailableDynamicSMemPerBlock => occupancy::available_dynamic_smem,
    cuOccupancyMaxActiveClusters | cuOccupancyMaxPotentialClusterSize => occupancy::cluster_query,
    cuLinkCreate | cuLinkCreate_v2 => link::create,
    cuLinkAddData | cuLinkAddData_v2 | cuLinkAddFile | cuLinkAddFile_v2 => link::add_data,
    cuLinkComplete => link::complete,
    cuLinkDestroy => link::destroy,
    cuMemCreate => vmm::create,
    cuMemGetAllocationGranularity => vmm::granularity,
    cuMemGetAllocationPropertiesFromHandle => vmm::properties,
    cuMemRetainAllocationHandle => vmm::retain,
    cuProfilerStart | cuProfilerStop => profiler::start_stop,
    cuLibraryEnumerateKernels => library::enumerate_kernels,
    cuModuleGetTexRef | cuModuleGetSurfRef => library::get_ref,
    cuStreamBatchMemOp | cuStreamBatchMemOp_ptsz => library::batch_mem_op,
    // -- stacks routes end --
}

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
