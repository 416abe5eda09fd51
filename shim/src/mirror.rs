//! DEVICEMAP host memory where the GPU cannot map guest memory (TCP): the **mirror**.
//!
//! `cuMemHostAlloc(…, CU_MEMHOSTALLOC_DEVICEMAP)` over TCP has the host worker allocate
//! host-pinned memory of the same size with a device pointer (`special::MIRROR_ALLOC`, host half
//! `host/src/dispatch/handlers/mirror.rs`) and gives the application guest memory mapped at
//! that same address when it is free in this process (so the pointer works on the GPU as
//! under UVA natively), page-aligned heap memory otherwise; either is recorded as pinned, so
//! copies treat it as any pinned memory. `cuMemHostGetDevicePointer` answers the device
//! pointer. Small pinned allocations without the flag are mirrored the same way
//! ([`alloc_implicit`]): natively every pinned allocation is device-mapped, and XLA's timers
//! poll a 4-byte one from a kernel. The content is mirrored:
//!
//! - guest → host, **before every request** sent while a mirror exists ([`before_request`],
//!   called from `forward.rs`): the runs of bytes that differ from a shadow copy of the last
//!   content both sides agreed on are pushed (`special::MIRROR_PUSH`), exactly those bytes, so
//!   a byte the guest left alone keeps what the device may have written there since;
//! - host → guest, **after a call that makes device writes visible to the host** succeeds
//!   ([`after_request`], [`SYNC_CALLS`]): stream, event and context synchronisation, a stream or
//!   event query that answers success, a synchronous copy (of any direction: it orders after
//!   the work before it, as CUDA's synchronous copies do). The whole content is pulled
//!   (`special::MIRROR_PULL`) and every byte the device changed (host ≠ shadow) is written to
//!   the guest buffer and the shadow; bytes the device left alone keep the guest's value.
//!
//! The DEVICEMAP mirrors of a process hold at most [`MAX_CLIENT_BYTES`] (1 MiB): the shadow
//! comparison then stays cheap. Beyond it, DEVICEMAP over TCP fails as before (`CUDA_ERROR_NOT_SUPPORTED`,
//! with a log line). Over the shared region DEVICEMAP memory is a zero-copy block instead
//! (`handlers/zero_copy.rs`); mirrors are only made over TCP. A forked child forgets its
//! parent's mirrors (its worker is another one, which never heard of them): its copies of the
//! buffers stay plain memory. Rules and where they differ from native: `docs/handlers.md`,
//! "DEVICEMAP memory over TCP: the mirror".
//!
//! Managed memory over TCP (`handlers/managed.rs`) is a mirror too, whose guest buffer is mapped
//! at the mirror's device pointer ([`alloc_managed`]): one pointer for the CPU and the GPU. It
//! shares the rules, has its own cap ([`managed_cap`], `VGPU_MANAGED_MIRROR_MIB`), and
//! `cuMemFree` frees it ([`free_managed`]). A `__managed__` variable (`cuLibraryGetManaged`,
//! [`library_managed`]) is mirrored the same way on either transport: the driver placed it in
//! the host worker's address space, so the guest maps pages at its address and mirrors them,
//! until its library is unloaded ([`forget_library`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use cuda_headers::{CuError, CuResult};
use protocol::special::mirror::{
    AllocRequest, Allocated, FreeRequest, PullRequest, Pulled, Push, Write, MAX_ENTRIES,
};
use protocol::{special, CallId, RequestHeader};

use crate::channel::with_channel;
use crate::forward::bad_response;
use crate::log::{log, Level};

pub use protocol::special::mirror::MAX_CLIENT_BYTES;
use protocol::special::mirror::{DEFAULT_MANAGED_BYTES, MAX_MANAGED_BYTES};

const PAGE: usize = 4096;

/// The calls after whose success the device's writes are visible to the host, so mirrors are
/// pulled: synchronisation, successful queries, synchronous copies.
pub const SYNC_CALLS: [u32; 42] = [
    shim_macros::cuda_call_id!(cuStreamSynchronize),
    shim_macros::cuda_call_id!(cuStreamSynchronize_ptsz),
    shim_macros::cuda_call_id!(cuEventSynchronize),
    shim_macros::cuda_call_id!(cuCtxSynchronize),
    shim_macros::cuda_call_id!(cuCtxSynchronize_v2),
    shim_macros::cuda_call_id!(cuStreamQuery),
    shim_macros::cuda_call_id!(cuStreamQuery_ptsz),
    shim_macros::cuda_call_id!(cuEventQuery),
    shim_macros::cuda_call_id!(cuMemcpyDtoH_v2),
    shim_macros::cuda_call_id!(cuMemcpyDtoH_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyHtoD_v2),
    shim_macros::cuda_call_id!(cuMemcpyHtoD_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpy),
    shim_macros::cuda_call_id!(cuMemcpy_ptds),
    shim_macros::cuda_call_id!(cuMemcpyDtoD_v2),
    shim_macros::cuda_call_id!(cuMemcpyDtoD_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpy2D_v2),
    shim_macros::cuda_call_id!(cuMemcpy2D_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpy2DUnaligned_v2),
    shim_macros::cuda_call_id!(cuMemcpy2DUnaligned_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpy3D_v2),
    shim_macros::cuda_call_id!(cuMemcpy3D_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyPeer),
    shim_macros::cuda_call_id!(cuMemcpyPeer_ptds),
    shim_macros::cuda_call_id!(cuMemcpy3DPeer),
    shim_macros::cuda_call_id!(cuMemcpy3DPeer_ptds),
    shim_macros::cuda_call_id!(cuMemcpyAtoH_v2),
    shim_macros::cuda_call_id!(cuMemcpyAtoH_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyHtoA_v2),
    shim_macros::cuda_call_id!(cuMemcpyHtoA_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyAtoD_v2),
    shim_macros::cuda_call_id!(cuMemcpyAtoD_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyDtoA_v2),
    shim_macros::cuda_call_id!(cuMemcpyDtoA_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyAtoA_v2),
    shim_macros::cuda_call_id!(cuMemcpyAtoA_v2_ptds),
    shim_macros::cuda_call_id!(cuMemcpyDtoH),
    shim_macros::cuda_call_id!(cuMemcpyHtoD),
    shim_macros::cuda_call_id!(cuMemcpyDtoD),
    shim_macros::cuda_call_id!(cuMemcpy2D),
    shim_macros::cuda_call_id!(cuMemcpy2DUnaligned),
    shim_macros::cuda_call_id!(cuMemcpy3D),
];

/// What a mirror's guest buffer is, which says who frees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Pinned memory the GPU may use (DEVICEMAP, or small pinned memory mirrored anyway:
    /// `implicit`), freed by `cuMemFreeHost` ([`free`]). `mapped`: the guest buffer is a mapping
    /// at the host's device pointer (`guest == device`, as under UVA natively); otherwise heap
    /// memory (the address was taken in this process).
    Devicemap { mapped: bool, implicit: bool },
    /// Managed memory: `guest == device`, an anonymous mapping, freed by `cuMemFree`
    /// ([`free_managed`]).
    Managed,
    /// A `__managed__` variable of library `library`: `guest == device`, inside pages mapped for
    /// variables ([`Table::variable_pages`]); forgotten when the library is unloaded.
    Variable { library: u64 },
}

/// The guest's cap on managed mirrors, in bytes: `VGPU_MANAGED_MIRROR_MIB` (MiB; default
/// [`DEFAULT_MANAGED_BYTES`]), at most the host's [`MAX_MANAGED_BYTES`]. Every request compares
/// every mirror with its shadow, and every synchronising call copies every mirror whole from
/// the host, so the cap bounds what a process pays for them.
pub(crate) fn managed_cap() -> u64 {
    static CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| parse_managed_cap(std::env::var("VGPU_MANAGED_MIRROR_MIB").ok().as_deref()))
}

/// [`managed_cap`] from the variable's value: whole MiB, clamped to [`MAX_MANAGED_BYTES`];
/// anything unreadable is the default (logged).
fn parse_managed_cap(value: Option<&str>) -> u64 {
    let Some(value) = value else {
        return DEFAULT_MANAGED_BYTES;
    };
    match value.trim().parse::<u64>() {
        Ok(mib) => mib.saturating_mul(1 << 20).min(MAX_MANAGED_BYTES),
        Err(_) => {
            log!(
                Level::Warn,
                "VGPU_MANAGED_MIRROR_MIB={value:?} is not a number of MiB; using {}",
                DEFAULT_MANAGED_BYTES >> 20
            );
            DEFAULT_MANAGED_BYTES
        }
    }
}

/// One mirrored buffer.
#[derive(Debug)]
struct Mirror {
    /// Guest address of the first byte (memory this module allocated: a mapping at the host's
    /// device pointer, or page-aligned heap memory for pinned memory whose address was taken;
    /// for a variable its address inside pages mapped there).
    guest: usize,
    /// Bytes the application asked for (at least 1).
    len: usize,
    /// The host's id.
    id: u64,
    /// The device pointer of the host's pinned memory.
    device: u64,
    /// The content both sides last agreed on.
    shadow: Vec<u8>,
    /// What it is.
    kind: Kind,
}

impl Mirror {
    /// The guest buffer, read now.
    fn guest_bytes(&self) -> &[u8] {
        // SAFETY: `guest` holds `len` bytes this module allocated and frees only after the
        // mirror leaves the table (the caller holds the table's lock). The application may
        // write them concurrently; a torn read is pushed again at the next request.
        unsafe { std::slice::from_raw_parts(self.guest as *const u8, self.len) }
    }
}

/// The runs `[start, end)` where `a` and `b` differ, in order: exactly the differing bytes
/// (a byte equal in both is in no run, so a push never writes it).
fn changed_runs(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        match (x != y, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, a.len().min(b.len())));
    }
    runs
}

/// The process's mirrors, by guest address.
#[derive(Debug, Default)]
struct Table {
    by_guest: BTreeMap<usize, Mirror>,
    /// Bytes of DEVICEMAP mirrors (the implicit ones included).
    bytes: usize,
    /// Bytes of implicit mirrors (pinned memory allocated without DEVICEMAP).
    implicit_bytes: usize,
    /// Bytes of managed mirrors (allocations and variables).
    managed_bytes: usize,
    /// The pages mapped for variables, each with the number of variables it holds (two
    /// variables may share a page).
    variable_pages: BTreeMap<usize, usize>,
    /// The process the mirrors belong to (0 before the first).
    pid: u32,
}

impl Table {
    const fn new() -> Self {
        Self {
            by_guest: BTreeMap::new(),
            bytes: 0,
            implicit_bytes: 0,
            managed_bytes: 0,
            variable_pages: BTreeMap::new(),
            pid: 0,
        }
    }

    /// Records `m`.
    fn insert(&mut self, m: Mirror) {
        if let Kind::Devicemap { implicit, .. } = m.kind {
            self.bytes += m.len;
            if implicit {
                self.implicit_bytes += m.len;
            }
        } else {
            self.managed_bytes += m.len;
        }
        self.by_guest.insert(m.guest, m);
        note_live(self);
    }

    /// Forgets the mirror at `guest`.
    fn take(&mut self, guest: usize) -> Option<Mirror> {
        let m = self.by_guest.remove(&guest)?;
        if let Kind::Devicemap { implicit, .. } = m.kind {
            self.bytes -= m.len;
            if implicit {
                self.implicit_bytes -= m.len;
            }
        } else {
            self.managed_bytes -= m.len;
        }
        note_live(self);
        Some(m)
    }

    /// Whether `len` more bytes of managed mirrors stay within [`managed_cap`].
    fn managed_room(&self, len: usize) -> bool {
        self.managed_bytes.saturating_add(len) as u64 <= managed_cap()
    }

    fn containing(&self, addr: usize) -> Option<&Mirror> {
        let (_, m) = self.by_guest.range(..=addr).next_back()?;
        (addr < m.guest + m.len).then_some(m)
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table::new());

/// Whether any mirror exists: the one check every request pays.
static LIVE: AtomicBool = AtomicBool::new(false);

/// The table; in a forked child, emptied first (the child's worker never heard of the
/// parent's mirrors; the child's copies of the buffers stay its plain memory).
fn table() -> MutexGuard<'static, Table> {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if t.pid != pid {
        if !t.by_guest.is_empty() {
            // The variables' pages stay mapped: the child's private copies.
            t.by_guest.clear();
            t.variable_pages.clear();
            t.bytes = 0;
            t.implicit_bytes = 0;
            t.managed_bytes = 0;
            note_live(&t);
        }
        t.pid = pid;
    }
    t
}

/// Sets [`LIVE`] from the table (called with its lock held).
fn note_live(table: &Table) {
    // SYNC POINT: pairs with the Acquire load in `any`: a thread that learnt of a mirror's
    // pointer from the allocating thread sees the flag set.
    LIVE.store(!table.by_guest.is_empty(), Ordering::Release);
}

fn any() -> bool {
    // SYNC POINT: pairs with the Release store in `note_live`.
    LIVE.load(Ordering::Acquire)
}

/// Sends one mirror call on this thread's channel (not through `forward.rs`, so that it does
/// not trigger the mirror hooks itself).
fn send<R>(
    id: CallId,
    encode: impl FnOnce(&mut protocol::Encoder<'_>),
    decode: impl FnOnce(&mut protocol::Decoder<'_>) -> CuResult<R>,
) -> CuResult<R> {
    with_channel(|channel| {
        channel.exchange(|buf| encode(&mut RequestHeader::start(buf, id, 0)), decode)
    })
}

/// The most bytes one pinned allocation without DEVICEMAP may have and still be mirrored over
/// TCP ([`alloc_implicit`]).
pub(crate) const IMPLICIT_MAX_ALLOC: usize = 4096;
/// The most bytes of such implicit mirrors a process holds: every request compares them with
/// their shadows, so they stay small.
pub(crate) const IMPLICIT_MAX_BYTES: usize = 64 * 1024;

/// Allocates `len` bytes of DEVICEMAP memory mirrored on the host.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` past [`MAX_CLIENT_BYTES`] (logged), `CUDA_ERROR_OUT_OF_MEMORY`
/// when the guest has no memory, the host's error.
pub(crate) fn alloc(len: usize) -> CuResult<*mut u8> {
    let len = len.max(1);
    let held = table().bytes;
    if held.saturating_add(len) as u64 > MAX_CLIENT_BYTES {
        log!(
            Level::Warn,
            "cuMemHostAlloc: DEVICEMAP memory over TCP is mirrored on the host, at most {MAX_CLIENT_BYTES} bytes per process ({held} held, {len} asked); over TCP the GPU cannot map guest memory"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    create(len, false)
}

/// Pinned memory asked for without DEVICEMAP over TCP. Natively every pinned allocation is
/// mapped for the device (UVA), and programs rely on it: XLA's timers launch a kernel that
/// polls a 4-byte pinned semaphore the CPU releases. So a small one (at most
/// [`IMPLICIT_MAX_ALLOC`] bytes, [`IMPLICIT_MAX_BYTES`] in all) is mirrored like DEVICEMAP
/// memory. `None`: it is not (too large, past the budget, or the host refused), and the caller
/// hands out plain guest memory as before.
pub(crate) fn alloc_implicit(len: usize) -> Option<*mut u8> {
    let len = len.max(1);
    if len > IMPLICIT_MAX_ALLOC {
        return None;
    }
    {
        let t = table();
        if t.implicit_bytes + len > IMPLICIT_MAX_BYTES
            || t.bytes.saturating_add(len) as u64 > MAX_CLIENT_BYTES
        {
            return None;
        }
    }
    create(len, true).ok()
}

/// Has the host allocate a mirror of `len` bytes and places the guest buffer: at the host's
/// device pointer when that range is free in this process (one pointer for the CPU and the GPU,
/// as natively), else on the heap.
fn create(len: usize, implicit: bool) -> CuResult<*mut u8> {
    let request = AllocRequest { len: len as u64 };
    let allocated = send(
        special::MIRROR_ALLOC,
        |enc| request.encode(enc),
        |dec| Allocated::decode(dec).map_err(bad_response),
    )?;
    let (guest, mapped) = match map_at(allocated.device_ptr, len) {
        Some(at) => (at, true),
        None => {
            let mut p: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: posix_memalign writes `p` on success; the alignment is a power of two.
            if unsafe { libc::posix_memalign(&mut p, PAGE, len) } != 0 {
                let free = FreeRequest { id: allocated.id };
                let _ = send(special::MIRROR_FREE, |enc| free.encode(enc), |_| Ok(()));
                return Err(CuError::OUT_OF_MEMORY);
            }
            // SAFETY: `p` holds `len` bytes, just allocated; the host's mirror starts zeroed.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, len) };
            (p as usize, false)
        }
    };
    table().insert(Mirror {
        guest,
        len,
        id: allocated.id,
        device: allocated.device_ptr,
        shadow: vec![0; len],
        kind: Kind::Devicemap { mapped, implicit },
    });
    Ok(guest as *mut u8)
}

/// Frees the mirror whose buffer starts at `p`; `None` when `p` is not one.
pub(crate) fn free(p: usize) -> Option<CuResult> {
    let mirror = {
        let mut t = table();
        if !matches!(t.by_guest.get(&p)?.kind, Kind::Devicemap { .. }) {
            return None;
        }
        t.take(p)?
    };
    let request = FreeRequest { id: mirror.id };
    let result = send(special::MIRROR_FREE, |enc| request.encode(enc), |_| Ok(()));
    if let Kind::Devicemap { mapped: true, .. } = mirror.kind {
        // SAFETY: mapped by `create` (`map_at`) with this length; it left the table above, so
        // no push or pull reads it any more.
        unsafe { libc::munmap(mirror.guest as *mut libc::c_void, mirror.len) };
    } else {
        // SAFETY: allocated by `create` with posix_memalign; it left the table above.
        unsafe { libc::free(mirror.guest as *mut libc::c_void) };
    }
    Some(result)
}

/// The device pointer standing in for guest byte `addr` of a mirror.
pub(crate) fn device_pointer(addr: usize) -> Option<u64> {
    if !any() {
        return None;
    }
    let t = table();
    let m = t.containing(addr)?;
    Some(m.device + (addr - m.guest) as u64)
}

/// Allocates `len` bytes of managed memory (`cuMemAllocManaged`, `flags` its attach flags)
/// mirrored on the host: the host allocates a mirror, and the guest maps its buffer at the
/// mirror's device pointer (`MAP_FIXED_NOREPLACE`), so that one pointer serves the guest's CPU
/// and the GPU. Host half: `host/src/dispatch/handlers/managed.rs`.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY` past [`managed_cap`] or when the address range is taken in this
/// process (each with a log line); the host's refusal.
pub(crate) fn alloc_managed(len: usize, flags: u32) -> CuResult<*mut u8> {
    let (room, held) = {
        let t = table();
        (t.managed_room(len), t.managed_bytes)
    };
    if !room {
        log!(
            Level::Warn,
            "cuMemAllocManaged: managed memory over TCP is mirrored, at most {} bytes per process (VGPU_MANAGED_MIRROR_MIB; {held} held, {len} asked)",
            managed_cap()
        );
        return Err(CuError::OUT_OF_MEMORY);
    }
    let (id, device) = send(
        CallId(shim_macros::cuda_call_id!(cuMemAllocManaged)),
        |enc| {
            enc.put(len as u64);
            enc.put(flags);
            enc.put(0u64);
        },
        |dec| {
            let id: u64 = dec.get().map_err(bad_response)?;
            let _span: u64 = dec.get().map_err(bad_response)?;
            let device: u64 = dec.get().map_err(bad_response)?;
            dec.finish().map_err(bad_response)?;
            Ok((id, device))
        },
    )?;
    let Some(mapped) = map_at(device, len) else {
        log!(
            Level::Warn,
            "cuMemAllocManaged: the host's device pointer {device:#x} ({len} bytes) is taken in this process: managed memory over TCP needs the same address on both sides"
        );
        release_managed(device);
        return Err(CuError::OUT_OF_MEMORY);
    };
    table().insert(Mirror {
        guest: mapped,
        len,
        id,
        device,
        shadow: vec![0; len],
        kind: Kind::Managed,
    });
    Ok(mapped as *mut u8)
}

/// The `__managed__` variable `name` of `library` (`cuLibraryGetManaged`): (its address, its
/// size). The host answers the driver's device pointer and size and mirrors the variable
/// (`host/src/dispatch/handlers/managed.rs`); the guest maps the pages holding it at that same
/// address (`MAP_FIXED_NOREPLACE`; pages already mapped for another variable are shared) and
/// pulls its content at once (the module's initial value), then keeps it equal by the mirror's
/// rules. Asked again, the same variable is answered from the table.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY` past [`managed_cap`]; `CUDA_ERROR_NOT_SUPPORTED` when a page of
/// the address range is taken in this process (each with a log line); the host's refusal.
pub(crate) fn library_managed(library: u64, name: &[u8]) -> CuResult<(u64, usize)> {
    let (id, device, len) = send(
        CallId(shim_macros::cuda_call_id!(cuLibraryGetManaged)),
        |enc| {
            enc.put(library);
            enc.put_bytes(name);
        },
        |dec| {
            let id: u64 = dec.get().map_err(bad_response)?;
            let device: u64 = dec.get().map_err(bad_response)?;
            let len: u64 = dec.get().map_err(bad_response)?;
            dec.finish().map_err(bad_response)?;
            Ok((id, device, len))
        },
    )?;
    let (Ok(guest), Ok(len)) = (usize::try_from(device), usize::try_from(len)) else {
        return Err(CuError::NOT_SUPPORTED);
    };
    {
        let mut t = table();
        if let Some(m) = t.by_guest.get(&guest) {
            return if m.id == id && m.len == len {
                Ok((device, len))
            } else {
                Err(CuError::NOT_SUPPORTED)
            };
        }
        if !t.managed_room(len) {
            log!(
                Level::Warn,
                "cuLibraryGetManaged: __managed__ variables are mirrored, at most {} bytes of managed memory per process (VGPU_MANAGED_MIRROR_MIB; {} held, {len} asked)",
                managed_cap(),
                t.managed_bytes
            );
            return Err(CuError::OUT_OF_MEMORY);
        }
        if let Err(page) = map_variable_pages(&mut t, guest, len) {
            log!(
                Level::Warn,
                "cuLibraryGetManaged: the variable's address {device:#x} ({len} bytes) is taken in this process at page {page:#x}: a __managed__ variable needs the host's address here too"
            );
            return Err(CuError::NOT_SUPPORTED);
        }
        t.insert(Mirror {
            guest,
            len,
            id,
            device,
            shadow: vec![0; len],
            kind: Kind::Variable { library },
        });
    }
    // The module's initial value: the device's content differs from the zeroed shadow.
    pull_ids(Some(&[id])).inspect_err(|e| {
        log!(
            Level::Warn,
            "cuLibraryGetManaged: cannot read the variable at {device:#x} from the host: {e:?}"
        );
    })?;
    Ok((device, len))
}

/// The pages holding `[at, at + len)`.
fn pages(at: usize, len: usize) -> impl Iterator<Item = usize> {
    let first = at & !(PAGE - 1);
    let end = at.saturating_add(len.max(1));
    (first..end).step_by(PAGE)
}

/// Maps (zeroed) every page of `[at, at + len)` that no variable holds yet, and counts the
/// variable in each. Nothing is kept on failure.
///
/// # Errors
/// The first page that is taken in this process by something else.
fn map_variable_pages(t: &mut Table, at: usize, len: usize) -> Result<(), usize> {
    let mut mapped_now = Vec::new();
    for page in pages(at, len) {
        if t.variable_pages.contains_key(&page) {
            continue;
        }
        if map_at(page as u64, PAGE).is_none() {
            for &p in &mapped_now {
                // SAFETY: mapped just above by `map_at`, known to no one else.
                unsafe { libc::munmap(p as *mut libc::c_void, PAGE) };
            }
            return Err(page);
        }
        mapped_now.push(page);
    }
    for page in pages(at, len) {
        *t.variable_pages.entry(page).or_insert(0) += 1;
    }
    Ok(())
}

/// Forgets the `__managed__` variables of `library` (it is being unloaded: the host forgets
/// them too) and unmaps the pages no other variable holds. The application must not touch them
/// afterwards, as natively.
pub(crate) fn forget_library(library: u64) {
    if !any() {
        return;
    }
    let mut t = table();
    let gone: Vec<usize> = t
        .by_guest
        .values()
        .filter(|m| m.kind == Kind::Variable { library })
        .map(|m| m.guest)
        .collect();
    for guest in gone {
        let Some(m) = t.take(guest) else { continue };
        for page in pages(m.guest, m.len) {
            let Some(refs) = t.variable_pages.get_mut(&page) else {
                continue;
            };
            *refs -= 1;
            if *refs == 0 {
                t.variable_pages.remove(&page);
                // SAFETY: mapped by `map_variable_pages`; no variable in the table holds it any
                // more, so no push or pull touches it.
                unsafe { libc::munmap(page as *mut libc::c_void, PAGE) };
            }
        }
    }
}

/// Maps `len` zeroed bytes at exactly `at`, if that range is free in this process.
fn map_at(at: u64, len: usize) -> Option<usize> {
    let want = usize::try_from(at).ok()?;
    if want == 0 || want % PAGE != 0 || len == 0 {
        return None;
    }
    // SAFETY: an anonymous mapping; MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            want as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if p as usize != want {
        // Kernels before 4.17 take the flag as a hint and map elsewhere.
        // SAFETY: the mapping just made, known to no one else.
        unsafe { libc::munmap(p, len) };
        return None;
    }
    Some(want)
}

/// Has the host free managed memory `device` (`cuMemFree_v2`) that the guest could not use or
/// no longer holds, over either transport; a failure is logged. Sent without the mirrors' push
/// and pull (it may run while the mirror table is held).
pub(crate) fn release_managed(device: u64) {
    let freed = send(
        CallId(shim_macros::cuda_call_id!(cuMemFree_v2)),
        |enc| enc.put(device),
        |_| Ok(()),
    );
    if let Err(e) = freed {
        log!(
            Level::Warn,
            "cannot free managed memory {device:#x} on the host: {e:?}"
        );
    }
}

/// Frees the managed memory starting at `p`: forgets it, has the host free its mirror and unmaps
/// the guest's buffer; `None` when `p` is not managed memory of this module.
pub(crate) fn free_managed(p: usize) -> Option<CuResult> {
    let mirror = {
        let mut t = table();
        if t.by_guest.get(&p)?.kind != Kind::Managed {
            return None;
        }
        t.take(p)?
    };
    let result = send(
        CallId(shim_macros::cuda_call_id!(cuMemFree_v2)),
        |enc| enc.put(mirror.device),
        |_| Ok(()),
    );
    // SAFETY: mapped by `map_at` for `len` bytes; it left the table above, so no push or pull
    // touches it any more.
    unsafe { libc::munmap(mirror.guest as *mut libc::c_void, mirror.len) };
    Some(result)
}

/// The managed allocation holding `addr`: (first byte, length). Not a `__managed__` variable:
/// the host's driver answers for those (the memory at that address is managed there).
pub(crate) fn managed_range(addr: usize) -> Option<(usize, usize)> {
    if !any() {
        return None;
    }
    let t = table();
    let m = t.containing(addr).filter(|m| m.kind == Kind::Managed)?;
    Some((m.guest, m.len))
}

/// Pushes what the guest changed, before request `call` is sent.
///
/// # Errors
/// The push's failure (the request is then not sent).
pub(crate) fn before_request(call: u32) -> CuResult {
    if !any() || !CallId(call).is_function() {
        return Ok(());
    }
    let mut t = table();
    // Snapshot the changed runs (the application may keep writing): what is sent is what the
    // shadows then hold.
    let mut writes: Vec<(usize, u64, usize, Vec<u8>)> = Vec::new();
    for (&guest, m) in &t.by_guest {
        if m.guest_bytes() == m.shadow.as_slice() {
            continue;
        }
        let now = m.guest_bytes().to_vec();
        for (start, end) in changed_runs(&now, &m.shadow) {
            writes.push((guest, m.id, start, now[start..end].to_vec()));
        }
    }
    for chunk in writes.chunks(MAX_ENTRIES) {
        let push = Push {
            writes: chunk
                .iter()
                .map(|(_, id, offset, data)| Write {
                    id: *id,
                    offset: *offset as u64,
                    data,
                })
                .collect(),
        };
        send(special::MIRROR_PUSH, |enc| push.encode(enc), |_| Ok(()))?;
        for (guest, _, start, data) in chunk {
            if let Some(m) = t.by_guest.get_mut(guest) {
                m.shadow[*start..*start + data.len()].copy_from_slice(data);
            }
        }
    }
    Ok(())
}

/// Pulls what the device wrote, after request `call` succeeded. A failed pull is logged (the
/// call itself succeeded).
pub(crate) fn after_request(call: u32) {
    if !any() || !SYNC_CALLS.contains(&call) {
        return;
    }
    if let Err(e) = pull_ids(None) {
        log!(
            Level::Warn,
            "cannot read DEVICEMAP memory back from the host after call {call}: {e:?}"
        );
    }
}

/// Pulls the mirrors named in `only` (`None`: all of them).
fn pull_ids(only: Option<&[u64]>) -> CuResult {
    let mut t = table();
    let named: Vec<(usize, u64)> = t
        .by_guest
        .values()
        .filter(|m| only.is_none_or(|ids| ids.contains(&m.id)))
        .map(|m| (m.guest, m.id))
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let request = PullRequest {
        ids: named.iter().map(|&(_, id)| id).collect(),
    };
    let guests: Vec<usize> = named.iter().map(|&(guest, _)| guest).collect();
    send(
        special::MIRROR_PULL,
        |enc| request.encode(enc),
        |dec| {
            let pulled = Pulled::decode(dec, guests.len()).map_err(bad_response)?;
            for (guest, content) in guests.iter().zip(&pulled.contents) {
                let Some(m) = t.by_guest.get_mut(guest) else {
                    continue;
                };
                if content.len() != m.len {
                    return Err(CuError::UNKNOWN);
                }
                for (i, (&now, was)) in content.iter().zip(m.shadow.iter_mut()).enumerate() {
                    if now != *was {
                        *was = now;
                        // SAFETY: `i < len`; the buffer is this module's allocation and stays
                        // allocated while in the table (the lock is held).
                        unsafe { (m.guest as *mut u8).add(i).write_volatile(now) };
                    }
                }
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_runs_are_exactly_the_differing_bytes() {
        assert_eq!(changed_runs(b"abcd", b"abcd"), vec![]);
        assert_eq!(changed_runs(b"xbcd", b"abcd"), vec![(0, 1)]);
        assert_eq!(changed_runs(b"abXdY", b"abcde"), vec![(2, 3), (4, 5)]);
        assert_eq!(changed_runs(b"XYcZ", b"abcd"), vec![(0, 2), (3, 4)]);
        assert_eq!(changed_runs(b"", b""), vec![]);
    }

    #[test]
    fn the_managed_cap_is_whole_mib_within_the_hosts() {
        assert_eq!(parse_managed_cap(None), DEFAULT_MANAGED_BYTES);
        assert_eq!(parse_managed_cap(Some("1")), 1 << 20);
        assert_eq!(parse_managed_cap(Some(" 512 ")), 512 << 20);
        assert_eq!(parse_managed_cap(Some("0")), 0);
        assert_eq!(parse_managed_cap(Some("999999")), MAX_MANAGED_BYTES);
        assert_eq!(parse_managed_cap(Some("lots")), DEFAULT_MANAGED_BYTES);
    }

    #[test]
    fn variable_pages_cover_the_range() {
        assert_eq!(pages(0x1008, 4).collect::<Vec<_>>(), vec![0x1000]);
        assert_eq!(pages(0x1ffe, 4).collect::<Vec<_>>(), vec![0x1000, 0x2000]);
        assert_eq!(pages(0x2000, 0x1000).collect::<Vec<_>>(), vec![0x2000]);
    }

    #[test]
    fn sync_calls_are_distinct_functions() {
        let mut ids = SYNC_CALLS.to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SYNC_CALLS.len());
        assert!(SYNC_CALLS.iter().all(|&id| CallId(id).is_function()));
    }
}
