//! The handle gate: every handle of a gated kind ([`Kind`]: streams, events, functions, kernels,
//! modules, libraries, graphs, graph nodes, executable graphs, memory pools, link states,
//! contexts, green contexts and their resource descriptors, arrays, mipmapped arrays, external
//! memory and semaphores, graphics resources, EGL stream connections, texture and surface
//! references, user objects and callback registrations) that a guest passes is looked up in its
//! client's table before the driver sees it.
//!
//! The driver's handles are pointers into the worker. A guest that sends a value the driver never
//! gave it (a forged or stale handle) would have the driver dereference whatever lies there, so
//! the host records every handle of these kinds that the driver hands this client ([`Handles::mint`],
//! [`Handles::mint_all`] for node arrays; by generated calls from the `mint` steps of
//! `shim_macros::cuda_forwarders!`, by hand-written halves explicitly), checks every one it is
//! given ([`Handles::admit`] and the typed accessors [`Handles::stream`], [`Handles::graph`],
//! [`Handles::context`], [`Handles::graph_nodes`] for arrays, …) and forgets it when it is
//! destroyed ([`Handles::retire`]).
//!
//! Some handles belong to another ([`Entry::owner`]) and die with it: a module's or library's
//! functions and kernels; a graph's nodes (minted with the graph they were found in); a
//! child-graph node's embedded graph (and so, in turn, its nodes); a green context's context; a
//! mipmapped array's levels, an array's planes, and the arrays mapped from external memory or a
//! graphics resource. Retiring an owner forgets its descendants through a per-owner index, in
//! time proportional to what it owned. Destroying a context forgets what was made in it
//! (streams, events, functions, modules, executable graphs, arrays, external memory and
//! semaphores, graphics resources, texture and surface references). A handle the client was not
//! given, or of another kind, is answered with `CUDA_ERROR_INVALID_HANDLE`
//! (`CUDA_ERROR_INVALID_CONTEXT` for a context) and never reaches the driver; the client's other
//! calls go on.
//!
//! Contexts have two rules of their own. A primary context is minted by
//! `cuDevicePrimaryCtxRetain` and never retired: it is the same value across release and
//! retain, and the driver keeps it (a released one is answered by the driver, not dereferenced
//! as freed memory). And a context the table misses is admitted when it is the calling worker
//! thread's current context, which the worker can only have from this client (export-table slots
//! make contexts current without a call the host sees).
//!
//! Which parameter types are gated, and which generated functions destroy a handle, is said once,
//! in `shim-macros/src/gate.rs`. Hand-written halves turn guest values into these handle types only
//! through the accessors here (`host/tests/source_rules.rs`).
//!
//! The values the guest holds are still the driver's own (the table checks membership; it does
//! not translate). NULL is passed through for the driver to refuse (or, for a context, to read as
//! the current one), and the stream table admits `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`.
//! A memory pool may be minted any number of times (a device's default or current pool is the
//! same value on every call). One read lock and one hash lookup per handle; an array of nodes is
//! checked under one read lock. VMM allocation handles, which the header types as integers, are
//! gated and counted by references ([`Kind::Allocation`]); the other integer handles (texture
//! and surface objects, conditional handles) are not (see `docs/ARCHITECTURE.md`, "What the host
//! checks of a guest today").

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use cuda_headers::*;

/// The kinds of handle the gate keeps (`shim-macros/src/gate.rs`, `HANDLE_TYPES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    Stream,
    Event,
    Function,
    Kernel,
    Module,
    Library,
    Graph,
    GraphExec,
    GraphNode,
    MemoryPool,
    LinkState,
    /// A context: made by `cuCtxCreate*`, a primary context retained, or one of a green
    /// context; also the calling thread's current context, found on a miss (see
    /// [`Handles::admit`]).
    Context,
    GreenContext,
    /// A resource descriptor for `cuGreenCtxCreate`.
    ResourceDesc,
    Array,
    MipmappedArray,
    ExternalMemory,
    ExternalSemaphore,
    GraphicsResource,
    EglStream,
    TexRef,
    SurfRef,
    UserObject,
    AsyncCallback,
    LogsCallback,
    /// A VMM allocation handle (`CUmemGenericAllocationHandle`, typed as an integer by the
    /// header, a pointer in the driver): counted by references, one per `cuMemCreate` or
    /// `cuMemRetainAllocationHandle`, each given back by one `cuMemRelease`.
    Allocation,
}

impl Kind {
    /// How many kinds there are.
    pub const COUNT: usize = Kind::Allocation as usize + 1;

    /// Whether a handle of this kind lives in a context (and dies with it). Graphs and their
    /// nodes are not bound to a context; memory pools belong to a device; a link state's
    /// output is bytes, kept until `cuLinkDestroy`; a context, a green context and a user
    /// object (counted by references that graphs hold too) are not made in one.
    fn in_context(self) -> bool {
        matches!(
            self,
            Kind::Stream
                | Kind::Event
                | Kind::Function
                | Kind::Module
                | Kind::GraphExec
                | Kind::Array
                | Kind::MipmappedArray
                | Kind::ExternalMemory
                | Kind::ExternalSemaphore
                | Kind::GraphicsResource
                | Kind::TexRef
                | Kind::SurfRef
        )
    }

    /// What the driver answers for a handle of this kind that is not one: contexts have their
    /// own code.
    fn refusal(self) -> CUresult {
        match self {
            Kind::Context => CUresult::CUDA_ERROR_INVALID_CONTEXT,
            _ => CUresult::CUDA_ERROR_INVALID_HANDLE,
        }
    }

    /// Whether a handle recorded as `self` may be passed where `wanted` is expected: a
    /// `CUkernel` may stand for a `CUfunction` (CUDA 12's launches and attributes take either).
    fn serves(self, wanted: Kind) -> bool {
        self == wanted || (wanted == Kind::Function && self == Kind::Kernel)
    }

    /// Whether the client holds a handle of this kind by references (each mint one more, each
    /// retire one less) rather than once: the driver hands a VMM allocation handle out again,
    /// the same value, from `cuMemRetainAllocationHandle`, and frees it with the last release.
    fn counts_references(self) -> bool {
        matches!(self, Kind::Allocation)
    }

    /// Whether handles minted from this one belong to it (rather than to its own owner).
    fn is_root(self) -> bool {
        matches!(
            self,
            Kind::Module
                | Kind::Library
                | Kind::Graph
                | Kind::GraphNode
                | Kind::GreenContext
                | Kind::Array
                | Kind::MipmappedArray
                | Kind::ExternalMemory
                | Kind::GraphicsResource
        )
    }
}

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`: stream values that are not handles.
const SPECIAL_STREAMS: [u64; 2] = [0x1, 0x2];

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// The handle this one belongs to and dies with (0: none): a module or library for
    /// functions and kernels, a graph for nodes, a child-graph node for its graph.
    owner: u64,
    /// The context it was made in (0: none, or context-independent).
    ctx: u64,
    /// References the client holds, for a kind that [`Kind::counts_references`] (1 otherwise).
    refs: u32,
}

/// Handles are addresses the driver chose, so a multiplicative hash spreads them well enough;
/// lookups of guest-chosen values cannot change the table's shape.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<AddressHasher>>;

/// The recorded handles, and for every owner the handles that belong to it.
#[derive(Debug, Default)]
struct Table {
    live: Map<Entry>,
    /// Owner → the values whose [`Entry::owner`] it is (no entry for an owner of none).
    owned: Map<Vec<u64>>,
}

/// How many handles of each kind a client holds (for the host's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Streams.
    pub streams: u64,
    /// Events.
    pub events: u64,
    /// Modules and libraries.
    pub modules: u64,
}

/// The owners a generated call's admitted handles hand on to the handles it mints (see
/// [`Handles::admit`]): a graph for nodes, a node for a child graph, a module or library for
/// functions, kernels and modules. Filled by the generated gate steps, one [`Lineage::note`] per
/// admitted handle.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lineage {
    /// The first module or library among the admitted code handles.
    code: u64,
    /// The admitted graph.
    graph: u64,
    /// The admitted graph node.
    node: u64,
    /// The first admitted green context, array, mipmapped array, external memory or graphics
    /// resource: what a context, an array level or plane, or a mapped array is taken from.
    source: u64,
}

impl Lineage {
    /// Notes an admitted handle of kind `kind`, with what [`Handles::admit`] returned for it.
    pub fn note(&mut self, kind: Kind, root: u64) {
        let slot = match kind {
            Kind::Module | Kind::Library | Kind::Function | Kind::Kernel => &mut self.code,
            Kind::Graph => &mut self.graph,
            Kind::GraphNode => &mut self.node,
            Kind::GreenContext
            | Kind::Array
            | Kind::MipmappedArray
            | Kind::ExternalMemory
            | Kind::GraphicsResource => &mut self.source,
            _ => return,
        };
        if *slot == 0 {
            *slot = root;
        }
    }

    /// The owner of a handle of kind `kind` the call mints: nodes belong to the call's graph
    /// (`cuGraphNodeFindInClone`: the clone), a graph to the call's node (the embedded graph of a
    /// child-graph node; a clone or a captured graph belongs to nothing), code handles to the
    /// call's module or library; a green context's context, a mipmapped array's level, an
    /// array's plane and the arrays mapped from external memory or a graphics resource to what
    /// they were taken from.
    pub fn owner_for(&self, kind: Kind) -> u64 {
        match kind {
            Kind::GraphNode => self.graph,
            Kind::Graph => self.node,
            Kind::Stream | Kind::Event | Kind::Function | Kind::Kernel | Kind::Module => self.code,
            Kind::Context | Kind::Array | Kind::MipmappedArray => self.source,
            _ => 0,
        }
    }
}

/// One client's handles (shared by its threads: a stream made on one is used on another).
#[derive(Debug, Default)]
pub struct Handles {
    table: RwLock<Table>,
    /// Entries per [`Kind`], changed under the write lock together with `table`.
    counts: [AtomicU64; Kind::COUNT],
}

/// Inserts or removes entries of a write-locked table, keeping [`Handles::counts`] and the
/// owner index.
struct Counted<'a> {
    table: RwLockWriteGuard<'a, Table>,
    counts: &'a [AtomicU64; Kind::COUNT],
}

impl Counted<'_> {
    fn count(&self, kind: Kind, up: bool) {
        let slot = &self.counts[kind as usize];
        // SYNC POINT: Relaxed: a statistic changed under the table's write lock, read Relaxed
        // by `Handles::census`.
        if up {
            slot.fetch_add(1, Ordering::Relaxed);
        } else {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn get(&self, value: &u64) -> Option<&Entry> {
        self.table.live.get(value)
    }

    /// Records `value`. One already recorded (as another kind: freed behind the table's back)
    /// is forgotten first, with what belonged to it.
    fn insert(&mut self, value: u64, entry: Entry) {
        if self.remove(&value).is_some() {
            self.remove_owned(vec![value]);
        }
        self.count(entry.kind, true);
        self.table.live.insert(value, entry);
        if entry.owner != 0 {
            self.table.owned.entry(entry.owner).or_default().push(value);
        }
    }

    fn remove(&mut self, value: &u64) -> Option<Entry> {
        let gone = self.table.live.remove(value)?;
        self.count(gone.kind, false);
        if gone.owner != 0 {
            if let Some(siblings) = self.table.owned.get_mut(&gone.owner) {
                if let Some(at) = siblings.iter().position(|v| v == value) {
                    siblings.swap_remove(at);
                }
                if siblings.is_empty() {
                    self.table.owned.remove(&gone.owner);
                }
            }
        }
        Some(gone)
    }

    /// Removes everything owned by the handles in `gone`, and what that owned, and so on.
    fn remove_owned(&mut self, mut gone: Vec<u64>) {
        while let Some(owner) = gone.pop() {
            let Some(children) = self.table.owned.remove(&owner) else {
                continue;
            };
            for child in children {
                if self.remove(&child).is_some() {
                    gone.push(child);
                }
            }
        }
    }
}

impl Handles {
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> Counted<'_> {
        Counted {
            table: self
                .table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            counts: &self.counts,
        }
    }

    /// How many streams, events and modules (with libraries) the client holds now.
    pub fn census(&self) -> Census {
        // SYNC POINT: Relaxed: statistics, pairing with the Relaxed changes in `Counted`.
        let n = |k: Kind| self.counts[k as usize].load(Ordering::Relaxed);
        Census {
            streams: n(Kind::Stream),
            events: n(Kind::Event),
            modules: n(Kind::Module) + n(Kind::Library),
        }
    }

    /// Checks a guest value passed as a handle of kind `kind`. `Ok` carries what a handle minted
    /// from it belongs to (see [`Lineage`]): the handle itself for a module, library, graph or
    /// graph node, its own owner for the other kinds (0 for none).
    ///
    /// # Errors
    /// `CUDA_ERROR_INVALID_HANDLE` for a value this client was not given as a `kind`.
    pub fn admit(&self, kind: Kind, value: u64) -> Result<u64, CUresult> {
        if value == 0 || (kind == Kind::Stream && SPECIAL_STREAMS.contains(&value)) {
            return Ok(0);
        }
        let admitted = admit_in(&self.read(), kind, value);
        match admitted {
            // A context current on this worker thread is one of this client's (the worker
            // serves no one else) even where no call the host saw handed it out: the driver set
            // it inside a call of an export table. Asking the driver for the current context
            // reads no guest value.
            Err(_) if kind == Kind::Context && value == current_context() => {
                self.mint(Kind::Context, value, 0);
                Ok(0)
            }
            other => other,
        }
    }

    /// Records a handle of kind `kind` that the driver gave this client, belonging to `owner` (0
    /// for none). A value already recorded as this kind (or as a kernel, for a function) keeps
    /// its entry: the driver hands out the same function, module or default memory pool again;
    /// for a kind counted by references, the client holds one more. One recorded as another
    /// kind was freed behind the table's back and is replaced.
    pub fn mint(&self, kind: Kind, value: u64, owner: u64) {
        self.mint_all(kind, &[value], owner);
    }

    /// [`Handles::mint`] for every value of an array the driver wrote (NULL entries are
    /// skipped), under one lock.
    pub fn mint_all(&self, kind: Kind, values: &[u64], owner: u64) {
        let known =
            |t: &Table, v: &u64| *v == 0 || t.live.get(v).is_some_and(|e| e.kind.serves(kind));
        if !kind.counts_references() {
            let table = self.read();
            if values.iter().all(|v| known(&table, v)) {
                return;
            }
        }
        let ctx = if kind.in_context() {
            current_context()
        } else {
            0
        };
        let mut table = self.write();
        for &value in values {
            if !known(&table.table, &value) {
                table.insert(
                    value,
                    Entry {
                        kind,
                        owner,
                        ctx,
                        refs: 1,
                    },
                );
            } else if kind.counts_references() {
                if let Some(e) = table.table.live.get_mut(&value) {
                    e.refs = e.refs.saturating_add(1);
                }
            }
        }
    }

    /// Forgets a destroyed handle and everything that belonged to it (a module's or library's
    /// functions and kernels, a graph's nodes, a child-graph node's graph and its nodes). For a
    /// kind counted by references, one reference goes, and the handle with the last.
    pub fn retire(&self, kind: Kind, value: u64) {
        let mut table = self.write();
        if table.get(&value).is_some_and(|e| e.kind == kind) {
            if kind.counts_references() {
                if let Some(e) = table.table.live.get_mut(&value) {
                    e.refs -= 1;
                    if e.refs > 0 {
                        return;
                    }
                }
            }
            table.remove(&value);
            if kind.is_root() {
                table.remove_owned(vec![value]);
            }
        }
    }

    /// Forgets every handle made in context `ctx` (destroyed), and what belonged to them.
    pub fn retire_context(&self, ctx: u64) {
        if ctx == 0 {
            return;
        }
        let mut table = self.write();
        let gone: Vec<u64> = table
            .table
            .live
            .iter()
            .filter(|(_, e)| e.ctx == ctx)
            .map(|(&v, _)| v)
            .collect();
        for v in &gone {
            table.remove(v);
        }
        table.remove_owned(gone);
    }

    /// Whether the client holds `value` as a handle of kind `kind` (a VMM allocation's memory is
    /// given back to its quota once no reference is left: `handlers/quota.rs`).
    pub fn holds(&self, kind: Kind, value: u64) -> bool {
        self.read().live.get(&value).is_some_and(|e| e.kind == kind)
    }

    /// How many handles are recorded (tests).
    pub fn len(&self) -> usize {
        self.read().live.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stream the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn stream(&self, value: u64) -> Result<CUstream, CUresult> {
        self.admit(Kind::Stream, value)
            .map(|_| value as usize as CUstream)
    }

    /// An event the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn event(&self, value: u64) -> Result<CUevent, CUresult> {
        self.admit(Kind::Event, value)
            .map(|_| value as usize as CUevent)
    }

    /// A function (or a kernel standing for one) the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn function(&self, value: u64) -> Result<CUfunction, CUresult> {
        self.admit(Kind::Function, value)
            .map(|_| value as usize as CUfunction)
    }

    /// A kernel the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn kernel(&self, value: u64) -> Result<CUkernel, CUresult> {
        self.admit(Kind::Kernel, value)
            .map(|_| value as usize as CUkernel)
    }

    /// A module the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn module(&self, value: u64) -> Result<CUmodule, CUresult> {
        self.admit(Kind::Module, value)
            .map(|_| value as usize as CUmodule)
    }

    /// A library the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn library(&self, value: u64) -> Result<CUlibrary, CUresult> {
        self.admit(Kind::Library, value)
            .map(|_| value as usize as CUlibrary)
    }

    /// A graph the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn graph(&self, value: u64) -> Result<CUgraph, CUresult> {
        self.admit(Kind::Graph, value)
            .map(|_| value as usize as CUgraph)
    }

    /// An executable graph the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn graph_exec(&self, value: u64) -> Result<CUgraphExec, CUresult> {
        self.admit(Kind::GraphExec, value)
            .map(|_| value as usize as CUgraphExec)
    }

    /// A graph node the guest passes, with the graph it was minted in (0: unknown).
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn graph_node(&self, value: u64) -> Result<(CUgraphNode, u64), CUresult> {
        if value == 0 {
            return Ok((std::ptr::null_mut(), 0));
        }
        let table = self.read();
        admit_in(&table, Kind::GraphNode, value)?;
        let graph = table.live.get(&value).map_or(0, |e| e.owner);
        Ok((value as usize as CUgraphNode, graph))
    }

    /// Every node of an array the guest passes (dependencies, edge ends), under one read lock.
    ///
    /// # Errors
    /// As [`Handles::admit`], for the first value refused.
    pub fn graph_nodes(&self, values: &[u64]) -> Result<Vec<CUgraphNode>, CUresult> {
        let table = self.read();
        values
            .iter()
            .map(|&v| {
                if v != 0 {
                    admit_in(&table, Kind::GraphNode, v)?;
                }
                Ok(v as usize as CUgraphNode)
            })
            .collect()
    }

    /// A memory pool the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn memory_pool(&self, value: u64) -> Result<CUmemoryPool, CUresult> {
        self.admit(Kind::MemoryPool, value)
            .map(|_| value as usize as CUmemoryPool)
    }

    /// A context the guest passes (NULL: the current one, for the driver to resolve).
    ///
    /// # Errors
    /// As [`Handles::admit`] (`CUDA_ERROR_INVALID_CONTEXT`).
    pub fn context(&self, value: u64) -> Result<CUcontext, CUresult> {
        self.admit(Kind::Context, value)
            .map(|_| value as usize as CUcontext)
    }

    /// A CUDA array the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn array(&self, value: u64) -> Result<CUarray, CUresult> {
        self.admit(Kind::Array, value)
            .map(|_| value as usize as CUarray)
    }

    /// A mipmapped array the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn mipmapped_array(&self, value: u64) -> Result<CUmipmappedArray, CUresult> {
        self.admit(Kind::MipmappedArray, value)
            .map(|_| value as usize as CUmipmappedArray)
    }

    /// A VMM allocation handle the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn allocation(&self, value: u64) -> Result<CUmemGenericAllocationHandle, CUresult> {
        self.admit(Kind::Allocation, value).map(|_| value)
    }

    /// A link state the guest passes.
    ///
    /// # Errors
    /// As [`Handles::admit`].
    pub fn link_state(&self, value: u64) -> Result<CUlinkState, CUresult> {
        self.admit(Kind::LinkState, value)
            .map(|_| value as usize as CUlinkState)
    }
}

/// [`Handles::admit`] of a non-NULL value in a read-locked table.
fn admit_in(table: &Table, kind: Kind, value: u64) -> Result<u64, CUresult> {
    match table.live.get(&value) {
        Some(e) if e.kind.serves(kind) => Ok(if e.kind.is_root() { value } else { e.owner }),
        _ => {
            tracing::debug!(?kind, value, "refused a handle this client was not given");
            Err(kind.refusal())
        }
    }
}

/// The calling thread's current context in the real driver (0 for none).
fn current_context() -> u64 {
    let Some(get) = crate::driver::real::cuCtxGetCurrent() else {
        return 0;
    };
    let mut ctx: CUcontext = std::ptr::null_mut();
    // SAFETY: `ctx` is a live local for one write.
    match unsafe { get(&mut ctx) } {
        CUresult::CUDA_SUCCESS => ctx as u64,
        _ => 0,
    }
}

/// Answers `$result` (a gate refusal) from the enclosing hand-written half, or yields the handle.
macro_rules! admit {
    ($result:expr, $out:ident) => {
        match $result {
            Ok(handle) => handle,
            Err(refused) => {
                protocol::ResponseHeader::start($out, refused.0);
                return Ok(());
            }
        }
    };
}
pub(crate) use admit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_minted_handles_of_the_right_kind_are_admitted() {
        let h = Handles::default();
        assert_eq!(
            h.admit(Kind::Stream, 0x5000),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        h.mint(Kind::Stream, 0x5000, 0);
        assert_eq!(h.admit(Kind::Stream, 0x5000), Ok(0));
        assert_eq!(
            h.admit(Kind::Event, 0x5000),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        for special in [0, 1, 2] {
            assert_eq!(h.admit(Kind::Stream, special), Ok(0));
        }
        assert_eq!(
            h.admit(Kind::Event, 1),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        h.retire(Kind::Stream, 0x5000);
        assert_eq!(
            h.admit(Kind::Stream, 0x5000),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
    }

    #[test]
    fn unloading_forgets_what_the_module_or_library_held() {
        let h = Handles::default();
        h.mint(Kind::Library, 0x100, 0);
        h.mint(Kind::Kernel, 0x110, 0x100);
        h.mint(Kind::Module, 0x120, 0x100);
        h.mint(Kind::Function, 0x130, 0x120);
        h.mint(Kind::Module, 0x200, 0);
        h.mint(Kind::Function, 0x210, 0x200);
        // A kernel stands for a function; a function hands its owner on.
        assert_eq!(h.admit(Kind::Function, 0x110), Ok(0x100));
        assert_eq!(
            h.admit(Kind::Kernel, 0x130),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        assert_eq!(h.admit(Kind::Module, 0x120), Ok(0x120));
        h.retire(Kind::Library, 0x100);
        for gone in [0x100, 0x110, 0x120, 0x130] {
            assert!(!h.read().live.contains_key(&gone), "{gone:#x} kept");
        }
        assert_eq!(h.len(), 2);
        // Retiring as the wrong kind changes nothing.
        h.retire(Kind::Library, 0x200);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn an_allocation_handle_lives_until_its_last_reference_is_released() {
        let h = Handles::default();
        assert_eq!(
            h.allocation(0xa110c),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        // cuMemCreate, then cuMemRetainAllocationHandle of a mapped address: two references.
        h.mint(Kind::Allocation, 0xa110c, 0);
        h.mint(Kind::Allocation, 0xa110c, 0);
        assert_eq!(h.len(), 1);
        h.retire(Kind::Allocation, 0xa110c);
        assert_eq!(h.allocation(0xa110c), Ok(0xa110c));
        assert!(h.holds(Kind::Allocation, 0xa110c));
        h.retire(Kind::Allocation, 0xa110c);
        assert!(!h.holds(Kind::Allocation, 0xa110c));
        assert_eq!(
            h.admit(Kind::Allocation, 0xa110c),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        // Retiring one more time, or as another kind, changes nothing.
        h.retire(Kind::Allocation, 0xa110c);
        h.mint(Kind::Stream, 0x5000, 0);
        h.retire(Kind::Allocation, 0x5000);
        assert_eq!(h.stream(0x5000).map(|s| s as u64), Ok(0x5000));
    }

    #[test]
    fn destroying_a_context_forgets_what_was_made_in_it() {
        let h = Handles::default();
        h.write().insert(
            0x10,
            Entry {
                kind: Kind::Stream,
                owner: 0,
                ctx: 0xc1,
                refs: 1,
            },
        );
        h.write().insert(
            0x20,
            Entry {
                kind: Kind::Module,
                owner: 0,
                ctx: 0xc1,
                refs: 1,
            },
        );
        h.write().insert(
            0x30,
            Entry {
                kind: Kind::Function,
                owner: 0x20,
                ctx: 0xc1,
                refs: 1,
            },
        );
        h.write().insert(
            0x40,
            Entry {
                kind: Kind::Event,
                owner: 0,
                ctx: 0xc2,
                refs: 1,
            },
        );
        h.write().insert(
            0x50,
            Entry {
                kind: Kind::Library,
                owner: 0,
                ctx: 0,
                refs: 1,
            },
        );
        assert_eq!(
            h.census(),
            Census {
                streams: 1,
                events: 1,
                modules: 2
            }
        );
        h.retire_context(0xc1);
        assert_eq!(h.len(), 2);
        assert_eq!(
            h.census(),
            Census {
                streams: 0,
                events: 1,
                modules: 1
            }
        );
        assert!(h.admit(Kind::Event, 0x40).is_ok());
        assert!(h.admit(Kind::Library, 0x50).is_ok());
    }

    #[test]
    fn destroying_a_graph_forgets_its_nodes_and_their_child_graphs() {
        let h = Handles::default();
        h.mint(Kind::Graph, 0x100, 0);
        h.mint_all(Kind::GraphNode, &[0x110, 0, 0x120], 0x100);
        // The embedded graph of child node 0x120, and its node.
        let mut lineage = Lineage::default();
        lineage.note(Kind::GraphNode, h.admit(Kind::GraphNode, 0x120).unwrap());
        h.mint(Kind::Graph, 0x200, lineage.owner_for(Kind::Graph));
        let mut lineage = Lineage::default();
        lineage.note(Kind::Graph, h.admit(Kind::Graph, 0x200).unwrap());
        h.mint(Kind::GraphNode, 0x210, lineage.owner_for(Kind::GraphNode));
        // A clone belongs to nothing; an executable graph outlives its graph.
        h.mint(Kind::Graph, 0x300, 0);
        h.mint(Kind::GraphExec, 0x400, 0);
        assert_eq!(h.len(), 7);
        assert_eq!(h.graph_node(0x110).map(|(_, g)| g), Ok(0x100));
        assert_eq!(h.graph_nodes(&[0x110, 0x210, 0]).map(|v| v.len()), Ok(3));
        assert_eq!(
            h.graph_nodes(&[0x110, 0x100]),
            Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
        // Destroying one node forgets it alone; destroying the child node forgets its graph.
        h.retire(Kind::GraphNode, 0x110);
        assert!(h.admit(Kind::GraphNode, 0x110).is_err());
        h.retire(Kind::GraphNode, 0x120);
        for gone in [0x120, 0x200, 0x210] {
            assert!(!h.read().live.contains_key(&gone), "{gone:#x} kept");
        }
        h.mint_all(Kind::GraphNode, &[0x130, 0x140], 0x100);
        h.retire(Kind::Graph, 0x100);
        assert_eq!(h.len(), 2);
        assert!(
            h.read().owned.is_empty(),
            "the owner index kept {:?}",
            h.read().owned
        );
        assert_eq!(h.graph(0x300).map(|g| g as u64), Ok(0x300));
        assert_eq!(h.graph_exec(0x400).map(|g| g as u64), Ok(0x400));
        assert!(h.graph_exec(0x300).is_err());
    }

    #[test]
    fn pools_are_minted_again_without_harm() {
        let h = Handles::default();
        h.mint(Kind::MemoryPool, 0x900, 0);
        h.mint(Kind::MemoryPool, 0x900, 0);
        assert_eq!(h.len(), 1);
        assert!(h.memory_pool(0x900).is_ok());
        assert!(h.link_state(0x900).is_err());
        h.retire(Kind::MemoryPool, 0x900);
        assert!(h.memory_pool(0x900).is_err());
        h.mint(Kind::LinkState, 0x900, 0);
        assert!(h.link_state(0x900).is_ok());
    }

    #[test]
    fn contexts_are_refused_with_their_own_code_and_arrays_die_with_what_they_came_from() {
        let h = Handles::default();
        assert_eq!(h.context(0xc0), Err(CUresult::CUDA_ERROR_INVALID_CONTEXT));
        assert!(
            h.context(0).is_ok_and(|c| c.is_null()),
            "NULL is the current context"
        );
        h.mint(Kind::Context, 0xc0, 0);
        assert!(h.context(0xc0).is_ok());
        assert_eq!(h.array(0xc0), Err(CUresult::CUDA_ERROR_INVALID_HANDLE));
        // A green context's context; a mipmapped array's level and that level's plane; an
        // array mapped from external memory.
        let minted_from = |source: Kind, value: u64, made: Kind, child: u64| {
            let mut lineage = Lineage::default();
            lineage.note(source, h.admit(source, value).expect("admitted"));
            h.mint(made, child, lineage.owner_for(made));
        };
        h.mint(Kind::GreenContext, 0x6c, 0);
        minted_from(Kind::GreenContext, 0x6c, Kind::Context, 0xc1);
        h.mint(Kind::MipmappedArray, 0x300, 0);
        minted_from(Kind::MipmappedArray, 0x300, Kind::Array, 0x310);
        minted_from(Kind::Array, 0x310, Kind::Array, 0x311);
        h.mint(Kind::ExternalMemory, 0x400, 0);
        minted_from(Kind::ExternalMemory, 0x400, Kind::MipmappedArray, 0x410);
        assert_eq!(h.len(), 8);
        h.retire(Kind::MipmappedArray, 0x300);
        assert!(h.array(0x310).is_err() && h.array(0x311).is_err());
        assert!(h.mipmapped_array(0x410).is_ok());
        h.retire(Kind::ExternalMemory, 0x400);
        assert!(h.mipmapped_array(0x410).is_err());
        h.retire(Kind::GreenContext, 0x6c);
        assert_eq!(h.context(0xc1), Err(CUresult::CUDA_ERROR_INVALID_CONTEXT));
        // A destroyed context is forgotten; retiring it as another kind changes nothing.
        h.retire(Kind::Array, 0xc0);
        assert!(h.context(0xc0).is_ok());
        h.retire(Kind::Context, 0xc0);
        assert!(h.context(0xc0).is_err());
        assert!(h.is_empty());
    }

    #[test]
    fn a_value_reused_as_another_kind_leaves_its_old_owner() {
        let h = Handles::default();
        h.mint(Kind::Graph, 0x100, 0);
        h.mint(Kind::GraphNode, 0x110, 0x100);
        // The node was freed behind the table's back and the driver reused its address.
        h.mint(Kind::Event, 0x110, 0);
        h.retire(Kind::Graph, 0x100);
        assert!(h.event(0x110).is_ok());
        assert_eq!(h.len(), 1);
    }
}
