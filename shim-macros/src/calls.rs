//! The call table: one entry per call that does not simply take the generated path, on either
//! side. It is the one place that says, for each such call,
//! - its names (the `_v2`/`_ptds`/`_ptsz` aliases one handler serves);
//! - its guest half: a module of the shim that holds `pub unsafe fn <name>` for every name
//!   (`cuda_functions!` makes those exports `custom`), or none (the generated forwarder);
//! - its host half: a function under `host/src/dispatch/handlers/` (`host_routes!` routes every
//!   name to it, ahead of the generated dispatch), or none;
//! - its posting policy ([`Posted`]).
//!
//! From it `shim-macros` generates the shim's custom set, the host's routes, the posting policy
//! table both sides consult, and its share of the protocol fingerprint. A name of the table that
//! is not in the signature list, or a name listed twice, is a compile error of every macro that
//! reads the table.

/// Whether a call may travel as a posted request (`FLAG_NO_REPLY`: no response; a failure is
/// reported by the thread's next synchronous call).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Posted {
    /// Always answered. The host refuses a posted request for it.
    Never,
    /// A generated forwarder posted whenever posting is on: it only enqueues work on a stream,
    /// takes values only and returns nothing but the result.
    Always,
    /// A generated forwarder posted only when its guest half allows it (`posted::allowing`): the
    /// handler knows when the call has no effect the caller could observe at once.
    WhenAllowed,
    /// A hand-written guest half that posts some of its requests itself (launches, stream-ordered
    /// copies); the host accepts them posted.
    ByHandler,
}

impl Posted {
    /// The policy's number in the generated table (`protocol::calls::PostedPolicy`).
    pub fn code(self) -> u8 {
        match self {
            Posted::Never => 0,
            Posted::Always => 1,
            Posted::WhenAllowed => 2,
            Posted::ByHandler => 3,
        }
    }
}

/// One entry of [`CALLS`].
pub struct Call {
    /// The names one pair of halves serves.
    pub names: &'static [&'static str],
    /// The shim module (a path from the crate root) holding `pub unsafe fn <name>` for each name;
    /// `None`: the export is the generated forwarder.
    pub guest: Option<&'static str>,
    /// The host half, a path from `host/src/dispatch/handlers/` (`memory::htod`); `None`: the
    /// generated host half, if any.
    pub host: Option<&'static str>,
    /// See [`Posted`].
    pub posted: Posted,
}

impl Call {
    /// Answered in the guest alone, by `guest`'s functions.
    const fn guest(guest: &'static str, names: &'static [&'static str]) -> Self {
        Self {
            names,
            guest: Some(guest),
            host: None,
            posted: Posted::Never,
        }
    }

    /// Hand-written on both sides.
    const fn both(guest: &'static str, host: &'static str, names: &'static [&'static str]) -> Self {
        Self {
            names,
            guest: Some(guest),
            host: Some(host),
            posted: Posted::Never,
        }
    }

    /// The generated forwarder in the guest; a hand-written host half with the generated wire
    /// format (it wraps or replaces the generated one).
    const fn host(host: &'static str, names: &'static [&'static str]) -> Self {
        Self {
            names,
            guest: None,
            host: Some(host),
            posted: Posted::Never,
        }
    }

    /// Generated on both sides; listed for its posting policy only.
    const fn generated(names: &'static [&'static str]) -> Self {
        Self {
            names,
            guest: None,
            host: None,
            posted: Posted::Never,
        }
    }

    const fn posted(self, posted: Posted) -> Self {
        Self { posted, ..self }
    }
}

/// Every call that leaves the generated path, grouped by area.
pub const CALLS: &[Call] = &[
    // -- Answered in the guest alone --------------------------------------------------------
    // Error strings, as the driver words them.
    Call::guest("handlers::errors", &["cuGetErrorName", "cuGetErrorString"]),
    // CUDA_VISIBLE_DEVICES is applied in the guest.
    Call::guest(
        "handlers::devices",
        &["cuInit", "cuDeviceGet", "cuDeviceGetCount"],
    ),
    // Kept answers (local_cache.rs): asked once, then answered in the guest until the guest
    // itself changes them.
    Call::guest(
        "handlers::cached",
        &[
            "cuCtxGetCurrent",
            "cuCtxGetDevice",
            "cuCtxGetDevice_v2",
            "cuCtxGetLimit",
            "cuDevicePrimaryCtxGetState",
            "cuDeviceGetAttribute",
            "cuFuncGetAttribute",
            "cuFuncSetCacheConfig",
            "cuKernelGetAttribute",
            "cuKernelSetCacheConfig",
            "cuKernelGetFunction",
        ],
    ),
    // Attribute sets: the generated forwarder, posted when the handler allows it (an identical
    // repeated set is skipped).
    Call::guest(
        "handlers::cached",
        &["cuFuncSetAttribute", "cuKernelSetAttribute"],
    )
    .posted(Posted::WhenAllowed),
    // Runtime entry points (docs/runtime-api.md).
    Call::guest(
        "runtime_api::proc_address",
        &["cuGetProcAddress", "cuGetProcAddress_v2"],
    ),
    Call::guest("runtime_api::export_tables", &["cuGetExportTable"]),
    Call::guest("runtime_api::driver_version", &["cuDriverGetVersion"]),
    Call::guest(
        "runtime_api::primary_context",
        &["cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2"],
    ),
    // Pinned host memory lives in the region; these halves send other calls.
    Call::guest(
        "handlers::memory::host_alloc",
        &["cuMemAllocHost", "cuMemAllocHost_v2", "cuMemHostGetFlags"],
    ),
    Call::guest(
        "handlers::host_register",
        &[
            "cuMemHostRegister",
            "cuMemHostRegister_v2",
            "cuMemHostUnregister",
            "cuMemHostGetDevicePointer",
            "cuMemHostGetDevicePointer_v2",
        ],
    ),
    // Memsets that may target the guest's own pinned memory: the generated forwarder, posted
    // when the destination is device memory.
    Call::guest(
        "handlers::memset",
        &[
            "cuMemsetD8_v2",
            "cuMemsetD8_v2_ptds",
            "cuMemsetD16_v2",
            "cuMemsetD16_v2_ptds",
            "cuMemsetD32_v2",
            "cuMemsetD32_v2_ptds",
            "cuMemsetD8Async",
            "cuMemsetD8Async_ptsz",
            "cuMemsetD16Async",
            "cuMemsetD16Async_ptsz",
            "cuMemsetD32Async",
            "cuMemsetD32Async_ptsz",
            "cuMemsetD2D8_v2",
            "cuMemsetD2D8_v2_ptds",
            "cuMemsetD2D16_v2",
            "cuMemsetD2D16_v2_ptds",
            "cuMemsetD2D32_v2",
            "cuMemsetD2D32_v2_ptds",
            "cuMemsetD2D8Async",
            "cuMemsetD2D8Async_ptsz",
            "cuMemsetD2D16Async",
            "cuMemsetD2D16Async_ptsz",
            "cuMemsetD2D32Async",
            "cuMemsetD2D32Async_ptsz",
        ],
    )
    .posted(Posted::WhenAllowed),
    // Capture sequences are counted, so that cuStreamIsCapturing is answered in the guest while
    // none is open.
    Call::guest(
        "handlers::capture",
        &[
            "cuStreamBeginCapture",
            "cuStreamBeginCapture_ptsz",
            "cuStreamBeginCapture_v2",
            "cuStreamBeginCapture_v2_ptsz",
            "cuStreamEndCapture",
            "cuStreamEndCapture_ptsz",
            "cuStreamIsCapturing",
            "cuStreamIsCapturing_ptsz",
        ],
    ),
    Call::guest("handlers::library", &["cuLibraryGetUnifiedFunction"]),
    Call::guest(
        "handlers::module",
        &["cuModuleLoad", "cuLibraryLoadFromFile"],
    ),
    Call::guest("handlers::profiler", &["cuProfilerInitialize"]),
    // -- Generated on both sides, posted ----------------------------------------------------
    Call::generated(&[
        "cuEventRecord",
        "cuEventRecord_ptsz",
        "cuEventRecordWithFlags",
        "cuEventRecordWithFlags_ptsz",
        "cuStreamWaitEvent",
        "cuStreamWaitEvent_ptsz",
        "cuGraphLaunch",
        "cuGraphLaunch_ptsz",
        "cuMemcpyDtoDAsync_v2",
        "cuMemcpyDtoDAsync_v2_ptsz",
    ])
    .posted(Posted::Always),
    // -- Host halves around the generated wire format ----------------------------------------
    // The context quota (dispatch/quota.rs).
    Call::host("context::create_v2", &["cuCtxCreate_v2"]),
    // The GPU memory quota: allocations count against the client's limit.
    Call::host(
        "quota::alloc",
        &[
            "cuMemAlloc_v2",
            "cuMemAllocPitch_v2",
            "cuMemAllocAsync",
            "cuMemAllocAsync_ptsz",
            "cuMemAllocFromPoolAsync",
            "cuMemAllocFromPoolAsync_ptsz",
        ],
    ),
    Call::host("quota::free", &["cuMemRelease"]),
    // A mapping keeps a VMM allocation's memory counted until it is unmapped.
    Call::host("quota::map", &["cuMemMap"]),
    Call::host("quota::unmap", &["cuMemUnmap"]),
    Call::host("quota::free", &["cuMemFreeAsync", "cuMemFreeAsync_ptsz"]).posted(Posted::Always),
    Call::host("quota::get_info", &["cuMemGetInfo_v2"]),
    // Handles inside structs of the generated wire format: the error nodes the driver writes are
    // minted, the upload stream is admitted (dispatch/gate.rs).
    Call::host(
        "graph::exec_update",
        &["cuGraphExecUpdate", "cuGraphExecUpdate_v2"],
    ),
    // CUDA IPC handles leave the host sealed and are unsealed to be opened
    // (dispatch/ipc_seal.rs).
    Call::host(
        "ipc::get_handle",
        &["cuIpcGetMemHandle", "cuIpcGetEventHandle"],
    ),
    Call::host(
        "ipc::open_mem",
        &["cuIpcOpenMemHandle", "cuIpcOpenMemHandle_v2"],
    ),
    Call::host("ipc::open_event", &["cuIpcOpenEventHandle"]),
    // The array a texture or surface object reads, inside its resource descriptor.
    Call::host(
        "resource_objects::create",
        &["cuTexObjectCreate", "cuSurfObjectCreate"],
    ),
    Call::host(
        "graph::instantiate_with_params",
        &[
            "cuGraphInstantiateWithParams",
            "cuGraphInstantiateWithParams_ptsz",
        ],
    ),
    // -- Hand-written on both sides ---------------------------------------------------------
    // Devices and contexts.
    Call::both("handlers::device", "device::get_name", &["cuDeviceGetName"]),
    Call::both(
        "handlers::device",
        "device::get_pci_bus_id",
        &["cuDeviceGetPCIBusId"],
    ),
    Call::both(
        "handlers::devices",
        "device::get_by_pci_bus_id",
        &["cuDeviceGetByPCIBusId"],
    ),
    Call::both(
        "handlers::context",
        "context::create_v3",
        &["cuCtxCreate_v3"],
    ),
    Call::both(
        "handlers::context",
        "context::create_v4",
        &["cuCtxCreate_v4"],
    ),
    Call::both(
        "runtime_api::primary_context",
        "context::destroy",
        &["cuCtxDestroy", "cuCtxDestroy_v2"],
    ),
    // Copies: host pointers never reach the host; bytes travel inline, staged or zero-copy.
    Call::both(
        "handlers::memory::linear",
        "memory::htod",
        &["cuMemcpyHtoD_v2", "cuMemcpyHtoD_v2_ptds"],
    ),
    Call::both(
        "handlers::memory::linear",
        "memory::htod",
        &["cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync_v2_ptsz"],
    )
    .posted(Posted::ByHandler),
    Call::both(
        "handlers::memory::linear",
        "memory::dtoh",
        &[
            "cuMemcpyDtoH_v2",
            "cuMemcpyDtoH_v2_ptds",
            "cuMemcpyDtoHAsync_v2",
            "cuMemcpyDtoHAsync_v2_ptsz",
        ],
    ),
    Call::both(
        "handlers::memory::unified",
        "memory::unified",
        &["cuMemcpy", "cuMemcpy_ptds"],
    ),
    Call::both(
        "handlers::memory::unified",
        "memory::unified",
        &["cuMemcpyAsync", "cuMemcpyAsync_ptsz"],
    )
    .posted(Posted::ByHandler),
    Call::both(
        "handlers::memory::pitched",
        "memory::copy_2d",
        &[
            "cuMemcpy2D_v2",
            "cuMemcpy2D_v2_ptds",
            "cuMemcpy2DUnaligned_v2",
            "cuMemcpy2DUnaligned_v2_ptds",
            "cuMemcpy2DAsync_v2",
            "cuMemcpy2DAsync_v2_ptsz",
        ],
    ),
    Call::both(
        "handlers::memory::pitched",
        "memory::copy_3d",
        &[
            "cuMemcpy3D_v2",
            "cuMemcpy3D_v2_ptds",
            "cuMemcpy3DAsync_v2",
            "cuMemcpy3DAsync_v2_ptsz",
        ],
    ),
    Call::both(
        "handlers::memory::attributes",
        "memory::pointer_attribute",
        &["cuPointerGetAttribute"],
    ),
    Call::both(
        "handlers::pointer",
        "pointer::attributes",
        &["cuPointerGetAttributes"],
    ),
    Call::both(
        "handlers::memory::host_alloc",
        "zero_copy::alloc",
        &["cuMemHostAlloc"],
    ),
    Call::both(
        "handlers::memory::host_alloc",
        "zero_copy::free",
        &["cuMemFreeHost"],
    ),
    // Managed memory: region or mirrored memory at one address for the guest and the GPU
    // (docs/handlers.md, "Managed memory"); frees of it, prefetches and advice are checked
    // against the client's own managed allocations.
    Call::both(
        "handlers::managed",
        "managed::alloc",
        &["cuMemAllocManaged"],
    ),
    Call::both("handlers::managed", "quota::free", &["cuMemFree_v2"]),
    Call::both(
        "handlers::managed",
        "managed::library_get_managed",
        &["cuLibraryGetManaged"],
    ),
    Call::guest("handlers::managed", &["cuMemGetAddressRange_v2"]),
    Call::host(
        "managed::prefetch",
        &[
            "cuMemPrefetchAsync",
            "cuMemPrefetchAsync_ptsz",
            "cuMemPrefetchAsync_v2",
            "cuMemPrefetchAsync_v2_ptsz",
        ],
    ),
    Call::host("managed::advise", &["cuMemAdvise", "cuMemAdvise_v2"]),
    Call::host(
        "managed::attach",
        &["cuStreamAttachMemAsync", "cuStreamAttachMemAsync_ptsz"],
    ),
    // Modules and libraries: images are sized in the guest and again on the host.
    Call::both(
        "handlers::module",
        "module::load_data",
        &["cuModuleLoadData", "cuModuleLoadFatBinary"],
    ),
    Call::both(
        "handlers::module",
        "module::load_data_ex",
        &["cuModuleLoadDataEx"],
    ),
    Call::both(
        "handlers::module",
        "module::get_function",
        &["cuModuleGetFunction"],
    ),
    Call::both(
        "handlers::module",
        "module::get_global",
        &["cuModuleGetGlobal_v2"],
    ),
    Call::both(
        "handlers::module",
        "module::library_load_data",
        &["cuLibraryLoadData"],
    ),
    Call::both(
        "handlers::module",
        "module::library_get_kernel",
        &["cuLibraryGetKernel"],
    ),
    Call::both(
        "handlers::module",
        "module::library_get_global",
        &["cuLibraryGetGlobal"],
    ),
    Call::both(
        "handlers::module",
        "module::get_name",
        &["cuFuncGetName", "cuKernelGetName"],
    ),
    Call::both(
        "handlers::module",
        "launch::unload",
        &["cuModuleUnload", "cuLibraryUnload"],
    ),
    Call::both(
        "handlers::library",
        "library::enumerate",
        &["cuLibraryEnumerateKernels", "cuModuleEnumerateFunctions"],
    ),
    Call::both(
        "handlers::library",
        "library::get_ref",
        &["cuModuleGetTexRef", "cuModuleGetSurfRef"],
    ),
    Call::both(
        "handlers::library",
        "library::batch_mem_op",
        &["cuStreamBatchMemOp", "cuStreamBatchMemOp_ptsz"],
    ),
    // Launches: parameters packed by the guest, checked against the host's own layout.
    Call::both(
        "handlers::launch",
        "launch::launch_kernel",
        &[
            "cuLaunchKernel",
            "cuLaunchKernel_ptsz",
            "cuLaunchCooperativeKernel",
            "cuLaunchCooperativeKernel_ptsz",
        ],
    )
    .posted(Posted::ByHandler),
    Call::both(
        "handlers::launch",
        "launch::launch_kernel_ex",
        &["cuLaunchKernelEx", "cuLaunchKernelEx_ptsz"],
    )
    .posted(Posted::ByHandler),
    // Host functions and callbacks run in the guest.
    Call::both(
        "handlers::hostfn",
        "hostfn::launch_host_func",
        &["cuLaunchHostFunc", "cuLaunchHostFunc_ptsz"],
    ),
    Call::both(
        "handlers::hostfn",
        "hostfn::stream_add_callback",
        &["cuStreamAddCallback", "cuStreamAddCallback_ptsz"],
    ),
    // Tensor maps (TMA descriptors), encoded on the host.
    Call::both(
        "handlers::tensor_map",
        "tensor_map::encode_tiled",
        &["cuTensorMapEncodeTiled"],
    ),
    Call::both(
        "handlers::tensor_map",
        "tensor_map::encode_im2col",
        &["cuTensorMapEncodeIm2col"],
    ),
    Call::both(
        "handlers::tensor_map",
        "tensor_map::replace_address",
        &["cuTensorMapReplaceAddress"],
    ),
    // Stream capture and stream attributes (unions sized by their attribute).
    Call::both(
        "handlers::capture",
        "capture::capture_info",
        &[
            "cuStreamGetCaptureInfo_v2",
            "cuStreamGetCaptureInfo_v2_ptsz",
            "cuStreamGetCaptureInfo_v3",
            "cuStreamGetCaptureInfo_v3_ptsz",
        ],
    ),
    Call::both(
        "handlers::capture",
        "capture::update_dependencies",
        &[
            "cuStreamUpdateCaptureDependencies",
            "cuStreamUpdateCaptureDependencies_ptsz",
            "cuStreamUpdateCaptureDependencies_v2",
            "cuStreamUpdateCaptureDependencies_v2_ptsz",
        ],
    ),
    Call::both(
        "handlers::capture",
        "capture::begin_capture_to_graph",
        &[
            "cuStreamBeginCaptureToGraph",
            "cuStreamBeginCaptureToGraph_ptsz",
        ],
    ),
    Call::both(
        "handlers::capture",
        "capture::get_attribute",
        &["cuStreamGetAttribute", "cuStreamGetAttribute_ptsz"],
    ),
    Call::both(
        "handlers::capture",
        "capture::set_attribute",
        &["cuStreamSetAttribute", "cuStreamSetAttribute_ptsz"],
    ),
    // Graphs: node arrays, node parameters, instantiation.
    Call::both(
        "handlers::graph::attributes",
        "capture::get_attribute",
        &["cuGraphKernelNodeGetAttribute"],
    ),
    Call::both(
        "handlers::graph::attributes",
        "capture::set_attribute",
        &["cuGraphKernelNodeSetAttribute"],
    ),
    Call::both(
        "handlers::graph::topology",
        "graph::query",
        &[
            "cuGraphGetNodes",
            "cuGraphGetRootNodes",
            "cuGraphGetEdges",
            "cuGraphGetEdges_v2",
            "cuGraphNodeGetDependencies",
            "cuGraphNodeGetDependencies_v2",
            "cuGraphNodeGetDependentNodes",
            "cuGraphNodeGetDependentNodes_v2",
        ],
    ),
    Call::both(
        "handlers::graph::topology",
        "graph::edges",
        &[
            "cuGraphAddDependencies",
            "cuGraphAddDependencies_v2",
            "cuGraphRemoveDependencies",
            "cuGraphRemoveDependencies_v2",
        ],
    ),
    Call::both(
        "handlers::graph::nodes",
        "graph::add_node",
        &[
            "cuGraphAddKernelNode_v2",
            "cuGraphAddMemcpyNode",
            "cuGraphAddMemsetNode",
            "cuGraphAddEmptyNode",
            "cuGraphAddEventRecordNode",
            "cuGraphAddEventWaitNode",
            "cuGraphAddHostNode",
            "cuGraphAddNode",
            "cuGraphAddNode_v2",
        ],
    ),
    Call::both(
        "handlers::graph::nodes",
        "graph::set_node",
        &[
            "cuGraphNodeSetParams",
            "cuGraphExecNodeSetParams",
            "cuGraphKernelNodeSetParams_v2",
            "cuGraphExecKernelNodeSetParams_v2",
            "cuGraphMemcpyNodeSetParams",
            "cuGraphExecMemcpyNodeSetParams",
            "cuGraphHostNodeSetParams",
            "cuGraphExecHostNodeSetParams",
        ],
    ),
    Call::both(
        "handlers::graph::params",
        "graph::kernel_get_params",
        &["cuGraphKernelNodeGetParams_v2"],
    ),
    Call::both(
        "handlers::graph::params",
        "graph::memcpy_get_params",
        &["cuGraphMemcpyNodeGetParams"],
    ),
    Call::both(
        "handlers::graph::params",
        "graph::host_get_params",
        &["cuGraphHostNodeGetParams"],
    ),
    Call::both(
        "handlers::graph::instantiate",
        "graph::instantiate",
        &["cuGraphInstantiate", "cuGraphInstantiate_v2"],
    ),
    Call::both(
        "handlers::graph::instantiate",
        "graph::dot_print",
        &["cuGraphDebugDotPrint"],
    ),
    // Pools, ranges and graph memory: attributes sized by their kind.
    Call::both(
        "handlers::pool",
        "pool::get_sized",
        &["cuMemPoolGetAttribute", "cuDeviceGetGraphMemAttribute"],
    ),
    Call::both(
        "handlers::pool",
        "pool::set_sized",
        &["cuMemPoolSetAttribute", "cuDeviceSetGraphMemAttribute"],
    ),
    Call::both("handlers::pool", "pool::create", &["cuMemPoolCreate"]),
    Call::both(
        "handlers::pool",
        "pool::set_access",
        &["cuMemPoolSetAccess"],
    ),
    Call::both(
        "handlers::pool",
        "pool::range_attributes",
        &["cuMemRangeGetAttribute", "cuMemRangeGetAttributes"],
    ),
    // Virtual memory management.
    Call::both("handlers::vmm", "pool::set_access", &["cuMemSetAccess"]),
    Call::both("handlers::vmm", "vmm::create", &["cuMemCreate"]),
    Call::both(
        "handlers::vmm",
        "vmm::granularity",
        &["cuMemGetAllocationGranularity"],
    ),
    Call::both(
        "handlers::vmm",
        "vmm::properties",
        &["cuMemGetAllocationPropertiesFromHandle"],
    ),
    Call::both(
        "handlers::vmm",
        "vmm::retain",
        &["cuMemRetainAllocationHandle"],
    ),
    // Device capabilities answered in arrays.
    Call::both(
        "handlers::device_caps",
        "device_caps::texture_1d_linear_max_width",
        &["cuDeviceGetTexture1DLinearMaxWidth"],
    ),
    Call::both(
        "handlers::device_caps",
        "device_caps::atomic_capabilities",
        &[
            "cuDeviceGetHostAtomicCapabilities",
            "cuDeviceGetP2PAtomicCapabilities",
        ],
    ),
    // Occupancy: block-size callbacks run in the guest.
    Call::both(
        "handlers::occupancy",
        "occupancy::potential_block_size",
        &[
            "cuOccupancyMaxPotentialBlockSize",
            "cuOccupancyMaxPotentialBlockSizeWithFlags",
        ],
    ),
    Call::both(
        "handlers::occupancy",
        "occupancy::available_dynamic_smem",
        &["cuOccupancyAvailableDynamicSMemPerBlock"],
    ),
    Call::both(
        "handlers::occupancy",
        "occupancy::cluster_query",
        &[
            "cuOccupancyMaxActiveClusters",
            "cuOccupancyMaxPotentialClusterSize",
        ],
    ),
    // Linking: JIT options and images.
    Call::both(
        "handlers::link",
        "link::create",
        &["cuLinkCreate", "cuLinkCreate_v2"],
    ),
    Call::both(
        "handlers::link",
        "link::add_data",
        &[
            "cuLinkAddData",
            "cuLinkAddData_v2",
            "cuLinkAddFile",
            "cuLinkAddFile_v2",
        ],
    ),
    Call::both("handlers::link", "link::complete", &["cuLinkComplete"]),
    Call::both("handlers::link", "link::destroy", &["cuLinkDestroy"]),
    // Profiler ranges.
    Call::both(
        "handlers::profiler",
        "profiler::start_stop",
        &["cuProfilerStart", "cuProfilerStop"],
    ),
];

/// Checks the table against the signature list (`names`, sorted): every name is a driver
/// function, listed once, and an entry has at least one half or a posting policy.
pub fn validate(names: &[&str]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for call in CALLS {
        if call.guest.is_none() && call.host.is_none() && call.posted == Posted::Never {
            return Err(format!(
                "call table: {:?} has neither half nor a posting policy",
                call.names
            ));
        }
        if call.posted == Posted::ByHandler && call.guest.is_none() {
            return Err(format!(
                "call table: {:?} is posted by its handler but has no guest half",
                call.names
            ));
        }
        for name in call.names {
            if names.binary_search(name).is_err() {
                return Err(format!(
                    "call table: `{name}` is not in the CUDA signature list"
                ));
            }
            if !seen.insert(*name) {
                return Err(format!("call table: `{name}` is listed twice"));
            }
        }
    }
    Ok(())
}

/// The entry that lists `name`.
fn entry_of(name: &str) -> Option<&'static Call> {
    CALLS.iter().find(|c| c.names.contains(&name))
}

/// Every name with a guest half.
pub fn guest_names() -> Vec<&'static str> {
    CALLS
        .iter()
        .filter(|c| c.guest.is_some())
        .flat_map(|c| c.names.iter().copied())
        .collect()
}

/// The shim module holding `name`'s guest half.
pub fn guest_of(name: &str) -> Option<&'static str> {
    entry_of(name).and_then(|c| c.guest)
}

/// `(name, host half)` for every name with a host half.
pub fn host_routes() -> Vec<(&'static str, &'static str)> {
    CALLS
        .iter()
        .filter_map(|c| c.host.map(|h| (c, h)))
        .flat_map(|(c, h)| c.names.iter().map(move |n| (*n, h)))
        .collect()
}

/// `name`'s posting policy.
pub fn posted_of(name: &str) -> Posted {
    entry_of(name).map_or(Posted::Never, |c| c.posted)
}

/// The table as text, for the protocol fingerprint: guest and host disagree on a call's
/// encoding exactly when they disagree on its entry.
pub fn fingerprint_text() -> String {
    let mut text = String::new();
    for call in CALLS {
        text.push_str(&format!(
            "{:?}|{:?}|{:?}|{:?};",
            call.names, call.guest, call.host, call.posted
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_driver_functions_once() {
        let names = crate::signatures::names().expect("signature list");
        validate(&names).expect("the call table is valid");
    }

    #[test]
    fn a_posted_policy_and_the_halves_are_found_by_any_alias() {
        assert_eq!(posted_of("cuLaunchKernel_ptsz"), Posted::ByHandler);
        assert_eq!(posted_of("cuEventRecord"), Posted::Always);
        assert_eq!(posted_of("cuStreamSynchronize"), Posted::Never);
        assert_eq!(
            guest_of("cuMemcpyHtoD_v2_ptds"),
            Some("handlers::memory::linear")
        );
        assert!(host_routes().contains(&("cuMemAllocAsync_ptsz", "quota::alloc")));
    }
}
