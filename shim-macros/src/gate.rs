//! What the host's handle gate needs to know of the signature list: which parameter types are
//! handles the host keeps per client, and which functions end a handle's life. The host's gate
//! (`host/src/dispatch/gate.rs`) holds the tables; this is the one place that says which types
//! and functions go through it, for generated calls. Hand-written host halves call the gate's
//! typed accessors themselves (`host/tests/source_rules.rs` keeps them from casting guest values
//! to these types).
//!
//! A generated function's `gate: [...]` list (see [`steps`]) names, per parameter:
//! - `admit K`: a handle of kind `K` the guest passes; the host looks it up before the driver sees
//!   it and answers `CUDA_ERROR_INVALID_HANDLE` for one this client was never given;
//! - `mint K`: a `*mut` handle of kind `K` the driver writes; the host clears it before the call
//!   (so that a value the guest sent is never recorded) and records it on success, as belonging
//!   to the call's graph (nodes), node (a child graph) or module or library (code handles);
//! - `retire K`: a handle the function destroys; on success the host forgets it.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Type;

use crate::classify::ParamKind;
use crate::model::CudaFunction;

/// Header type name → the gate's kind (`host/src/dispatch/gate.rs`, `Kind`).
pub const HANDLE_TYPES: &[(&str, &str)] = &[
    ("CUstream", "Stream"),
    ("CUevent", "Event"),
    ("CUfunction", "Function"),
    ("CUkernel", "Kernel"),
    ("CUmodule", "Module"),
    ("CUlibrary", "Library"),
    ("CUgraph", "Graph"),
    ("CUgraphExec", "GraphExec"),
    ("CUgraphNode", "GraphNode"),
    ("CUmemoryPool", "MemoryPool"),
    ("CUlinkState", "LinkState"),
    ("CUcontext", "Context"),
    ("CUgreenCtx", "GreenContext"),
    ("CUdevResourceDesc", "ResourceDesc"),
    ("CUarray", "Array"),
    ("CUmipmappedArray", "MipmappedArray"),
    ("CUexternalMemory", "ExternalMemory"),
    ("CUexternalSemaphore", "ExternalSemaphore"),
    ("CUgraphicsResource", "GraphicsResource"),
    ("CUeglStreamConnection", "EglStream"),
    ("CUtexref", "TexRef"),
    ("CUsurfref", "SurfRef"),
    ("CUuserObject", "UserObject"),
    ("CUasyncCallbackHandle", "AsyncCallback"),
    ("CUlogsCallbackHandle", "LogsCallback"),
    ("CUmemGenericAllocationHandle", "Allocation"),
];

/// Generated functions that destroy the handle they take (their first gated parameter). The
/// host forgets what belonged to it with it: a module's or library's functions and kernels, a
/// graph's nodes, a child-graph node's graph. `cuMemRelease` drops one reference to a VMM
/// allocation handle (the host forgets the handle with its last one).
pub const RETIRES: &[&str] = &[
    "cuStreamDestroy",
    "cuStreamDestroy_v2",
    "cuEventDestroy",
    "cuEventDestroy_v2",
    "cuModuleUnload",
    "cuLibraryUnload",
    "cuGraphDestroy",
    "cuGraphDestroyNode",
    "cuGraphExecDestroy",
    "cuMemPoolDestroy",
    "cuLinkDestroy",
    "cuCtxDestroy",
    "cuCtxDestroy_v2",
    "cuCtxDetach",
    "cuGreenCtxDestroy",
    "cuArrayDestroy",
    "cuMipmappedArrayDestroy",
    "cuDestroyExternalMemory",
    "cuDestroyExternalSemaphore",
    "cuGraphicsUnregisterResource",
    "cuTexRefDestroy",
    "cuDeviceUnregisterAsyncNotification",
    "cuLogsUnregisterCallback",
    "cuMemRelease",
];

/// The gate's kind for a parameter type written as a header name (`CUstream`), if it is gated.
pub fn kind_of(ty: &Type) -> Option<&'static str> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    HANDLE_TYPES
        .iter()
        .find(|(name, _)| last.ident == name)
        .map(|&(_, kind)| kind)
}

/// One gate step: `(verb, kind)` for parameter `index`.
pub fn step_of(
    function: &CudaFunction,
    kinds: &[ParamKind],
    index: usize,
) -> Option<(&'static str, &'static str)> {
    let first_gated = function
        .params
        .iter()
        .position(|p| kind_of(&p.ty).is_some());
    match &kinds[index] {
        ParamKind::Value => {
            let kind = kind_of(&function.params[index].ty)?;
            let retires = RETIRES.iter().any(|r| function.name == r) && first_gated == Some(index);
            Some((if retires { "retire" } else { "admit" }, kind))
        }
        ParamKind::InOut(inner) => kind_of(inner).map(|kind| ("mint", kind)),
        ParamKind::Input(inner) => kind_of(inner).map(|kind| ("admit_input", kind)),
    }
}

/// A generated function's `gate: [(param => verb Kind), …]` list.
pub fn steps(function: &CudaFunction, kinds: &[ParamKind]) -> TokenStream {
    let entries = (0..kinds.len()).filter_map(|i| {
        let (verb, kind) = step_of(function, kinds, i)?;
        let name = &function.params[i].name;
        let verb = Ident::new(verb, Span::call_site());
        let kind = Ident::new(kind, Span::call_site());
        Some(quote! { (#name => #verb #kind) })
    });
    quote! { [#(#entries),*] }
}

/// The gate steps as text, for the pinned classification report.
#[cfg(test)]
pub fn describe(function: &CudaFunction, kinds: &[ParamKind]) -> Vec<String> {
    (0..kinds.len())
        .filter_map(|i| {
            step_of(function, kinds, i)
                .map(|(verb, kind)| format!("{verb} {kind} {}", function.params[i].name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    fn function(sig: &str) -> CudaFunction {
        let item: syn::ForeignItemFn = syn::parse_str(sig).unwrap();
        CudaFunction::from_foreign(&item, Origin::Header).unwrap()
    }

    #[test]
    fn handles_are_admitted_minted_and_retired() {
        let create =
            function("pub fn cuStreamCreate(phStream: *mut CUstream, Flags: u32) -> CUresult;");
        let kinds = [
            ParamKind::InOut(syn::parse_quote!(CUstream)),
            ParamKind::Value,
        ];
        assert_eq!(describe(&create, &kinds), ["mint Stream phStream"]);

        let wait = function(
            "pub fn cuStreamWaitEvent(hStream: CUstream, hEvent: CUevent, Flags: u32) -> CUresult;",
        );
        let kinds = [ParamKind::Value, ParamKind::Value, ParamKind::Value];
        assert_eq!(
            describe(&wait, &kinds),
            ["admit Stream hStream", "admit Event hEvent"]
        );

        let destroy = function("pub fn cuEventDestroy_v2(hEvent: CUevent) -> CUresult;");
        assert_eq!(
            describe(&destroy, &[ParamKind::Value]),
            ["retire Event hEvent"]
        );

        let set = function("pub fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;");
        assert_eq!(describe(&set, &[ParamKind::Value]), ["admit Context ctx"]);
        let destroy = function("pub fn cuArrayDestroy(hArray: CUarray) -> CUresult;");
        assert_eq!(
            describe(&destroy, &[ParamKind::Value]),
            ["retire Array hArray"]
        );
        let release =
            function("pub fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult;");
        assert_eq!(
            describe(&release, &[ParamKind::Value]),
            ["retire Allocation handle"]
        );
        let map = function(
            "pub fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, \
             handle: CUmemGenericAllocationHandle, flags: ::std::os::raw::c_ulonglong) -> CUresult;",
        );
        assert_eq!(
            describe(&map, &vec![ParamKind::Value; 5]),
            ["admit Allocation handle"]
        );
        let other =
            function("pub fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult;");
        let kinds = [ParamKind::InOut(syn::parse_quote!(usize)), ParamKind::Value];
        assert!(describe(&other, &kinds).is_empty());
    }

    #[test]
    fn graphs_nodes_execs_pools_and_link_states_are_gated() {
        let find = function(
            "pub fn cuGraphNodeFindInClone(phNode: *mut CUgraphNode, hOriginalNode: CUgraphNode, \
             hClonedGraph: CUgraph) -> CUresult;",
        );
        let kinds = [
            ParamKind::InOut(syn::parse_quote!(CUgraphNode)),
            ParamKind::Value,
            ParamKind::Value,
        ];
        assert_eq!(
            describe(&find, &kinds),
            [
                "mint GraphNode phNode",
                "admit GraphNode hOriginalNode",
                "admit Graph hClonedGraph"
            ]
        );
        let launch =
            function("pub fn cuGraphLaunch(hGraph: CUgraphExec, hStream: CUstream) -> CUresult;");
        assert_eq!(
            describe(&launch, &[ParamKind::Value, ParamKind::Value]),
            ["admit GraphExec hGraph", "admit Stream hStream"]
        );
        for (sig, step) in [
            (
                "pub fn cuGraphDestroy(hGraph: CUgraph) -> CUresult;",
                "retire Graph hGraph",
            ),
            (
                "pub fn cuGraphDestroyNode(hNode: CUgraphNode) -> CUresult;",
                "retire GraphNode hNode",
            ),
            (
                "pub fn cuGraphExecDestroy(hGraphExec: CUgraphExec) -> CUresult;",
                "retire GraphExec hGraphExec",
            ),
            (
                "pub fn cuMemPoolDestroy(pool: CUmemoryPool) -> CUresult;",
                "retire MemoryPool pool",
            ),
            (
                "pub fn cuLinkDestroy(state: CUlinkState) -> CUresult;",
                "retire LinkState state",
            ),
        ] {
            assert_eq!(describe(&function(sig), &[ParamKind::Value]), [step]);
        }
    }
}
