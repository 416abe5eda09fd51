//! The handle gate: every stream, event, function, kernel, module and library handle a guest
//! passes is looked up in its client's table before the driver sees it.
//!
//! The driver's handles are pointers into the worker. A guest that sends a value the driver never
//! gave it (a forged or stale handle) would have the driver dereference whatever lies there, so
//! the host records every handle of these kinds that the driver hands this client ([`Handles::mint`],
//! by generated calls from the `mint` steps of `shim_macros::cuda_forwarders!`, by hand-written
//! halves explicitly), checks every one it is given ([`Handles::admit`] and the typed accessors
//! [`Handles::stream`], [`Handles::function`], …) and forgets it when it is destroyed
//! ([`Handles::retire`]): unloading a module or library forgets its functions and kernels,
//! destroying a context forgets what was made in it. A handle the client was not given, or of
//! another kind, is answered with `CUDA_ERROR_INVALID_HANDLE` and never reaches the driver; the
//! client's other calls go on.
//!
//! Which parameter types are gated, and which generated functions destroy a handle, is said once,
//! in `shim-macros/src/gate.rs`. Hand-written halves turn guest values into these handle types only
//! through the accessors here (`host/tests/source_rules.rs`).
//!
//! The values the guest holds are still the driver's own (the table checks membership; it does
//! not translate). NULL is passed through for the driver to refuse, and the stream table admits
//! `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`. One read lock and one hash lookup per handle.

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
}

impl Kind {
    /// Whether a handle of this kind lives in a context (and dies with it).
    fn in_context(self) -> bool {
        !matches!(self, Kind::Kernel | Kind::Library)
    }

    /// Whether a handle recorded as `self` may be passed where `wanted` is expected: a
    /// `CUkernel` may stand for a `CUfunction` (CUDA 12's launches and attributes take either).
    fn serves(self, wanted: Kind) -> bool {
        self == wanted || (wanted == Kind::Function && self == Kind::Kernel)
    }
}

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`: stream values that are not handles.
const SPECIAL_STREAMS: [u64; 2] = [0x1, 0x2];

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// The module or library this handle belongs to (0: none).
    owner: u64,
    /// The context it was made in (0: none, or context-independent).
    ctx: u64,
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

type Table = HashMap<u64, Entry, BuildHasherDefault<AddressHasher>>;

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

/// One client's handles (shared by its threads: a stream made on one is used on another).
#[derive(Debug, Default)]
pub struct Handles {
    live: RwLock<Table>,
    /// Entries per [`Kind`], changed under the write lock together with `live`.
    counts: [AtomicU64; 6],
}

/// Inserts or removes entries of a write-locked table, keeping [`Handles::counts`].
struct Counted<'a> {
    live: RwLockWriteGuard<'a, Table>,
    counts: &'a [AtomicU64; 6],
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

    fn insert(&mut self, value: u64, entry: Entry) {
        self.count(entry.kind, true);
        if let Some(old) = self.live.insert(value, entry) {
            self.count(old.kind, false);
        }
    }

    fn remove(&mut self, value: &u64) -> Option<Entry> {
        let gone = self.live.remove(value);
        if let Some(e) = gone {
            self.count(e.kind, false);
        }
        gone
    }
}

impl Handles {
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> Counted<'_> {
        Counted {
            live: self
                .live
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

    /// Checks a guest value passed as a handle of kind `kind`. `Ok` carries the module or library
    /// it belongs to (the handle itself for a module or library, 0 for none), which a handle
    /// minted from it inherits.
    ///
    /// # Errors
    /// `CUDA_ERROR_INVALID_HANDLE` for a value this client was not given as a `kind`.
    pub fn admit(&self, kind: Kind, value: u64) -> Result<u64, CUresult> {
        if value == 0 || (kind == Kind::Stream && SPECIAL_STREAMS.contains(&value)) {
            return Ok(0);
        }
        match self.read().get(&value) {
            Some(e) if e.kind.serves(kind) => Ok(match e.kind {
                Kind::Module | Kind::Library => value,
                _ => e.owner,
            }),
            _ => {
                tracing::debug!(?kind, value, "refused a handle this client was not given");
                Err(CUresult::CUDA_ERROR_INVALID_HANDLE)
            }
        }
    }

    /// Records a handle of kind `kind` that the driver gave this client, belonging to `owner` (a
    /// module or library, 0 for none). A value already recorded as this kind (or as a kernel, for
    /// a function) keeps its entry: the driver hands out the same function or module again. One
    /// recorded as another kind was freed behind the table's back and is replaced.
    pub fn mint(&self, kind: Kind, value: u64, owner: u64) {
        if value == 0 {
            return;
        }
        if self.read().get(&value).is_some_and(|e| e.kind.serves(kind)) {
            return;
        }
        let ctx = if kind.in_context() {
            current_context()
        } else {
            0
        };
        self.write().insert(value, Entry { kind, owner, ctx });
    }

    /// Forgets a destroyed handle and, for a module or library, everything that belonged to it.
    pub fn retire(&self, kind: Kind, value: u64) {
        let mut live = self.write();
        if live.live.get(&value).is_some_and(|e| e.kind == kind) {
            live.remove(&value);
            if matches!(kind, Kind::Module | Kind::Library) {
                retire_owned(&mut live, vec![value]);
            }
        }
    }

    /// Forgets every handle made in context `ctx` (destroyed), and what belonged to its modules.
    pub fn retire_context(&self, ctx: u64) {
        if ctx == 0 {
            return;
        }
        let mut live = self.write();
        let gone: Vec<u64> = live
            .live
            .iter()
            .filter(|(_, e)| e.ctx == ctx)
            .map(|(&v, _)| v)
            .collect();
        for v in &gone {
            live.remove(v);
        }
        retire_owned(&mut live, gone);
    }

    /// How many handles are recorded (tests).
    pub fn len(&self) -> usize {
        self.read().len()
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
}

/// Removes everything owned by the handles in `gone`, and what that owned, and so on.
fn retire_owned(live: &mut Counted<'_>, mut gone: Vec<u64>) {
    while !gone.is_empty() {
        let owned: Vec<u64> = live
            .live
            .iter()
            .filter(|(_, e)| e.owner != 0 && gone.contains(&e.owner))
            .map(|(&v, _)| v)
            .collect();
        for v in &owned {
            live.remove(v);
        }
        gone = owned;
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
            assert!(h.read().get(&gone).is_none(), "{gone:#x} kept");
        }
        assert_eq!(h.len(), 2);
        // Retiring as the wrong kind changes nothing.
        h.retire(Kind::Library, 0x200);
        assert_eq!(h.len(), 2);
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
            },
        );
        h.write().insert(
            0x20,
            Entry {
                kind: Kind::Module,
                owner: 0,
                ctx: 0xc1,
            },
        );
        h.write().insert(
            0x30,
            Entry {
                kind: Kind::Function,
                owner: 0x20,
                ctx: 0xc1,
            },
        );
        h.write().insert(
            0x40,
            Entry {
                kind: Kind::Event,
                owner: 0,
                ctx: 0xc2,
            },
        );
        h.write().insert(
            0x50,
            Entry {
                kind: Kind::Library,
                owner: 0,
                ctx: 0,
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
}
