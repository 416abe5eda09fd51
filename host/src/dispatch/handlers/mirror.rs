//! DEVICEMAP host memory where the GPU cannot map guest memory (TCP): the worker allocates
//! host-pinned memory (`cuMemHostAlloc(PORTABLE | DEVICEMAP)`) that stands in for the guest's
//! buffer, and the guest mirrors its content to and from it. Guest half and the rules of when:
//! `shim/src/mirror.rs`; wire format: `protocol::special::mirror`.
//!
//! The guest is hostile: it names a mirror only by an id minted here (per client, never
//! reused), every push is checked against the mirror's length before any byte is written, and
//! a client holds at most [`MAX_CLIENT_BYTES`] of DEVICEMAP mirrors and [`MAX_MANAGED_BYTES`]
//! of managed ones. Mirrors are freed on `special::MIRROR_FREE` and when the client's context
//! goes (the worker exits with it). Managed memory over TCP is a mirror too ([`create`], called
//! by `managed.rs`), marked so that only `cuMemFree` frees it. A `__managed__` variable of one
//! of the client's libraries is mirrored too ([`Mirrors::variable`], for every client): the
//! driver's own managed memory, which this worker's CPU reads and writes at its device pointer;
//! it is never freed here, and is forgotten when its library is unloaded.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

use cuda_headers::*;
use protocol::special::mirror::{
    AllocRequest, Allocated, FreeRequest, PullRequest, Pulled, Push, MAX_CLIENT_BYTES,
    MAX_MANAGED_BYTES,
};
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::dispatch::ClientContext;

/// `CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP`: every context sees it, with a
/// device pointer.
const ALLOC_FLAGS: u32 = 0x01 | 0x02;

/// What stands behind a mirror, which says who may free it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backing {
    /// DEVICEMAP memory (`cuMemHostAlloc`): pinned memory freed by a mirror free.
    Devicemap,
    /// Managed memory (`managed.rs`): pinned memory freed by `cuMemFree`, never by a mirror
    /// free.
    Managed,
    /// A `__managed__` variable of library `library` (`cuLibraryGetManaged`): the driver's
    /// managed memory, never freed here; forgotten when the library is unloaded.
    Variable { library: u64 },
}

/// One mirror: memory of this worker that the device reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mirror {
    /// This worker's address of the first byte.
    host: usize,
    /// Bytes.
    len: u64,
    /// The device pointer of the first byte.
    device: u64,
    /// What it is.
    backing: Backing,
}

impl Mirror {
    /// Whether it counts against [`MAX_MANAGED_BYTES`] (rather than [`MAX_CLIENT_BYTES`]).
    fn is_managed(&self) -> bool {
        self.backing != Backing::Devicemap
    }

    /// Whether it is pinned memory from `cuMemHostAlloc`, which `cuMemFreeHost` frees.
    fn is_pinned(&self) -> bool {
        !matches!(self.backing, Backing::Variable { .. })
    }
}

/// The mirrors of one client, by id. Pure bookkeeping (no driver).
#[derive(Debug)]
struct Table {
    by_id: BTreeMap<u64, Mirror>,
    next_id: u64,
    /// Bytes of DEVICEMAP mirrors.
    bytes: u64,
    /// Bytes of managed mirrors (allocations and variables).
    managed_bytes: u64,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            next_id: 1,
            bytes: 0,
            managed_bytes: 0,
        }
    }
}

impl Table {
    /// Whether `len` more bytes of mirrors of kind `managed` stay within the client's cap.
    fn has_room(&self, len: u64, managed: bool) -> bool {
        let (held, cap) = if managed {
            (self.managed_bytes, MAX_MANAGED_BYTES)
        } else {
            (self.bytes, MAX_CLIENT_BYTES)
        };
        len != 0 && held.checked_add(len).is_some_and(|total| total <= cap)
    }

    fn counter(&mut self, m: &Mirror) -> &mut u64 {
        if m.is_managed() {
            &mut self.managed_bytes
        } else {
            &mut self.bytes
        }
    }

    /// Records `m` under a fresh id.
    fn insert(&mut self, m: Mirror) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        *self.counter(&m) += m.len;
        self.by_id.insert(id, m);
        id
    }

    /// Removes mirror `id` unconditionally.
    fn take(&mut self, id: u64) -> Option<Mirror> {
        let m = self.by_id.remove(&id)?;
        *self.counter(&m) -= m.len;
        Some(m)
    }

    /// Removes the DEVICEMAP (not managed) mirror `id`.
    fn remove(&mut self, id: u64) -> Option<Mirror> {
        if self.by_id.get(&id)?.backing != Backing::Devicemap {
            return None;
        }
        self.take(id)
    }

    /// Removes the managed allocation (not a variable) whose first byte's device pointer is
    /// `device`.
    fn remove_managed(&mut self, device: u64) -> Option<Mirror> {
        let id = *self
            .by_id
            .iter()
            .find(|(_, m)| m.backing == Backing::Managed && m.device == device)?
            .0;
        self.take(id)
    }

    /// The id of the variable mirror at `device` of `library`, if recorded.
    fn variable(&self, library: u64, device: u64) -> Option<u64> {
        self.by_id
            .iter()
            .find(|(_, m)| m.backing == Backing::Variable { library } && m.device == device)
            .map(|(&id, _)| id)
    }

    /// Forgets the variables of `library`; answers how many there were.
    fn forget_library(&mut self, library: u64) -> usize {
        let ids: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, m)| m.backing == Backing::Variable { library })
            .map(|(&id, _)| id)
            .collect();
        for &id in &ids {
            self.take(id);
        }
        ids.len()
    }

    /// The mirror holding device range `[ptr, ptr + len)` (`len = 0`: the byte).
    fn holding(&self, ptr: u64, len: u64) -> Option<&Mirror> {
        let end = ptr.checked_add(len.max(1))?;
        self.by_id
            .values()
            .find(|m| ptr >= m.device && end <= m.device + m.len)
    }

    /// Whether device range `[ptr, ptr + len)` lies inside one mirror (`len = 0`: the byte).
    fn holds_device(&self, ptr: u64, len: u64) -> bool {
        self.holding(ptr, len).is_some()
    }

    /// Whether every write names a live mirror and lies inside it.
    fn admits(&self, push: &Push<'_>) -> bool {
        push.writes.iter().all(|w| {
            self.by_id.get(&w.id).is_some_and(|m| {
                w.offset
                    .checked_add(w.data.len() as u64)
                    .is_some_and(|end| end <= m.len)
            })
        })
    }
}

/// The mirrors of one client.
#[derive(Debug, Default)]
pub struct Mirrors {
    table: Mutex<Table>,
}

impl Mirrors {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether device range `[ptr, ptr + len)` lies inside one of the client's mirrors (a copy
    /// end the guest may name, as a zero-copy alias).
    pub fn holds(&self, ptr: u64, len: u64) -> bool {
        self.table().holds_device(ptr, len)
    }

    /// The managed mirror holding device range `[ptr, ptr + len)`: (its first byte, its
    /// length).
    pub(super) fn managed_holding(&self, ptr: u64, len: u64) -> Option<(u64, u64)> {
        self.table()
            .holding(ptr, len)
            .filter(|m| m.is_managed())
            .map(|m| (m.device, m.len))
    }

    /// Mirrors `__managed__` variable `[device, device + len)` of the client's library
    /// `library` (`cuLibraryGetManaged` answered them): the driver's managed memory, which this
    /// worker's CPU reaches at `device`. Asked again, answers the same id.
    ///
    /// # Errors
    /// `CUDA_ERROR_OUT_OF_MEMORY` past [`MAX_MANAGED_BYTES`] or for a zero length.
    pub(super) fn variable(&self, library: u64, device: u64, len: u64) -> Result<u64, CUresult> {
        let mut table = self.table();
        if let Some(id) = table.variable(library, device) {
            return Ok(id);
        }
        if !table.has_room(len, true) {
            tracing::warn!(
                len,
                cap = MAX_MANAGED_BYTES,
                "managed variable refused: zero bytes, or past the client's cap"
            );
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        Ok(table.insert(Mirror {
            host: device as usize,
            len,
            device,
            backing: Backing::Variable { library },
        }))
    }

    /// Whether `ptr` lies inside one of the client's `__managed__` variables (which
    /// `cuMemFree` must not reach: the driver placed them).
    pub(super) fn holds_variable(&self, ptr: u64) -> bool {
        self.table()
            .holding(ptr, 1)
            .is_some_and(|m| matches!(m.backing, Backing::Variable { .. }))
    }

    /// Forgets the `__managed__` variables of `library`, which is being unloaded (the driver
    /// frees their memory).
    pub(super) fn forget_library(&self, library: u64) {
        let n = self.table().forget_library(library);
        if n > 0 {
            tracing::debug!(library, n, "managed variables forgotten with their library");
        }
    }

    /// Frees the managed mirror whose first byte is `device`; `None` when there is none.
    pub(super) fn release_managed(&self, device: u64) -> Option<CUresult> {
        let m = self.table().remove_managed(device)?;
        Some(match crate::driver::real::cuMemFreeHost() {
            // SAFETY: `m.host` came from `cuMemHostAlloc` and left the table just now.
            Some(free) => unsafe { free(m.host as *mut c_void) },
            None => CUresult::CUDA_ERROR_NOT_SUPPORTED,
        })
    }
}

impl Drop for Mirrors {
    /// The client is gone: its pinned memory goes back to the driver.
    fn drop(&mut self) {
        let table = self.table.get_mut().unwrap_or_else(|e| e.into_inner());
        if table.by_id.is_empty() {
            return;
        }
        let Some(free) = crate::driver::real::cuMemFreeHost() else {
            return;
        };
        for m in std::mem::take(&mut table.by_id).into_values() {
            if !m.is_pinned() {
                continue;
            }
            // SAFETY: `m.host` came from `cuMemHostAlloc` and left the table just now.
            let result = unsafe { free(m.host as *mut c_void) };
            if result != CUresult::CUDA_SUCCESS {
                tracing::debug!(result = result.0, "cannot free a gone client's mirror");
            }
        }
    }
}

fn answer(out: &mut Vec<u8>, result: CUresult) -> Result<(), DecodeError> {
    respond(out, result);
    Ok(())
}

/// `special::MIRROR_ALLOC`: `u64 len` → result, `u64 id`, `u64 device_ptr`. Allocates `len`
/// bytes of zeroed pinned memory with a device pointer. `CUDA_ERROR_OUT_OF_MEMORY` past the
/// client's cap or when the driver has none; the driver's error otherwise.
pub fn alloc(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let request = AllocRequest::decode(dec)?;
    match create(&client.mirrors, request.len, false) {
        Ok((id, device)) => {
            Allocated {
                id,
                device_ptr: device,
            }
            .encode(&mut ResponseHeader::start(out, 0));
            Ok(())
        }
        Err(refused) => answer(out, refused),
    }
}

/// Allocates a mirror of `len` bytes (zeroed pinned memory with a device pointer) and records
/// it; answers its id and device pointer. `managed`: it backs managed memory (`managed.rs`);
/// the caps differ.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY` past the client's cap or when the driver has none; the driver's
/// error otherwise.
pub(super) fn create(mirrors: &Mirrors, len: u64, managed: bool) -> Result<(u64, u64), CUresult> {
    if !mirrors.table().has_room(len, managed) {
        tracing::warn!(
            len,
            managed,
            "mirror refused: zero bytes, or past the client's cap"
        );
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    let missing = |name: &str| {
        tracing::warn!("the driver lacks {name}");
        CUresult::CUDA_ERROR_NOT_SUPPORTED
    };
    let host_alloc =
        crate::driver::real::cuMemHostAlloc().ok_or_else(|| missing("cuMemHostAlloc"))?;
    let device_pointer = crate::driver::real::cuMemHostGetDevicePointer_v2()
        .ok_or_else(|| missing("cuMemHostGetDevicePointer_v2"))?;
    let free = crate::driver::real::cuMemFreeHost().ok_or_else(|| missing("cuMemFreeHost"))?;
    let mut host: *mut c_void = std::ptr::null_mut();
    // SAFETY: `host` is a live local the driver writes on success.
    let result = unsafe { host_alloc(&mut host, len as usize, ALLOC_FLAGS) };
    if result != CUresult::CUDA_SUCCESS || host.is_null() {
        tracing::warn!(len, result = result.0, "cuMemHostAlloc refused a mirror");
        return Err(if result == CUresult::CUDA_SUCCESS {
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        } else {
            result
        });
    }
    let mut device: CUdeviceptr = 0;
    // SAFETY: `device` is a live local; `host` was allocated mapped just above.
    let result = unsafe { device_pointer(&mut device, host, 0) };
    if result != CUresult::CUDA_SUCCESS || device == 0 {
        // SAFETY: allocated just above, never handed out.
        unsafe { free(host) };
        tracing::warn!(
            result = result.0,
            "mapped pinned memory has no device pointer"
        );
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: `host` holds `len` bytes, allocated just above and not yet shared.
    unsafe { std::ptr::write_bytes(host.cast::<u8>(), 0, len as usize) };
    let mirror = Mirror {
        host: host as usize,
        len,
        device,
        backing: if managed {
            Backing::Managed
        } else {
            Backing::Devicemap
        },
    };
    let id = {
        let mut table = mirrors.table();
        if !table.has_room(len, managed) {
            drop(table);
            // SAFETY: allocated just above, never handed out.
            unsafe { free(host) };
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        table.insert(mirror)
    };
    tracing::debug!(len, id, device, managed, "mirror allocated");
    Ok((id, device))
}

/// `special::MIRROR_FREE`: `u64 id` → result; `CUDA_ERROR_INVALID_VALUE` for an id this client
/// does not hold or that backs managed memory (`cuMemFree` frees those).
pub fn free(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let request = FreeRequest::decode(dec)?;
    let free = real_or_unsupported!(cuMemFreeHost, out);
    let Some(mirror) = client.mirrors.table().remove(request.id) else {
        tracing::warn!(id = request.id, "free of an unknown mirror");
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    };
    // SAFETY: `mirror.host` came from `cuMemHostAlloc` and left the table just now.
    let result = unsafe { free(mirror.host as *mut c_void) };
    answer(out, result)
}

/// `special::MIRROR_PUSH`: writes the guest's changed bytes. Every write is checked first; one
/// bad id, offset or length refuses the whole push with `CUDA_ERROR_INVALID_VALUE` (nothing is
/// written).
pub fn push(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let push = Push::decode(dec)?;
    let table = client.mirrors.table();
    if !table.admits(&push) {
        tracing::warn!("mirror push names an unknown mirror or runs past one");
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    for w in &push.writes {
        let m = table.by_id[&w.id];
        // SAFETY: `admits` checked `offset + len <= m.len`; `m.host` holds `m.len` bytes of
        // pinned memory while in the table (the lock is held). The device may read it
        // concurrently, as it may read any mapped memory the host writes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                w.data.as_ptr(),
                (m.host as *mut u8).add(w.offset as usize),
                w.data.len(),
            );
        }
    }
    answer(out, CUresult::CUDA_SUCCESS)
}

/// `special::MIRROR_PULL`: the whole content of each named mirror;
/// `CUDA_ERROR_INVALID_VALUE` when any id is not this client's, or when the answer would hold
/// more than [`MAX_CLIENT_BYTES`] and [`MAX_MANAGED_BYTES`] together (an id named again and
/// again: the guest's own pulls name each mirror once, so they never come near it).
pub fn pull(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let request = PullRequest::decode(dec)?;
    let table = client.mirrors.table();
    let mut contents = Vec::with_capacity(request.ids.len());
    let mut total: u64 = 0;
    for id in &request.ids {
        let Some(m) = table.by_id.get(id) else {
            tracing::warn!(id, "pull of an unknown mirror");
            return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        };
        total += m.len;
        if total > MAX_CLIENT_BYTES + MAX_MANAGED_BYTES {
            tracing::warn!(
                ids = request.ids.len(),
                "mirror pull refused: its answer would pass the client's cap"
            );
            return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `m.host` holds `m.len` bytes of pinned memory while in the table (the lock is
        // held until the answer is encoded). The device may write it concurrently; what is read
        // is what the host would see natively.
        contents.push(unsafe { std::slice::from_raw_parts(m.host as *const u8, m.len as usize) });
    }
    Pulled { contents }.encode(&mut ResponseHeader::start(out, 0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::special::mirror::Write;

    fn mirror(len: u64, device: u64) -> Mirror {
        Mirror {
            host: 0x1000,
            len,
            device,
            backing: Backing::Devicemap,
        }
    }

    #[test]
    fn ids_are_fresh_and_the_cap_holds() {
        let mut t = Table::default();
        assert!(!t.has_room(0, false));
        assert!(t.has_room(MAX_CLIENT_BYTES, false));
        assert!(!t.has_room(MAX_CLIENT_BYTES + 1, false));
        let a = t.insert(mirror(MAX_CLIENT_BYTES - 8, 0x9000));
        assert!(!t.has_room(9, false));
        assert!(t.has_room(8, false));
        assert!(!t.has_room(u64::MAX, false));
        assert!(
            t.has_room(MAX_MANAGED_BYTES, true),
            "managed mirrors have their own cap"
        );
        assert!(!t.has_room(MAX_MANAGED_BYTES + 1, true));
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "freed once");
        let b = t.insert(mirror(4, 0x9000));
        assert_ne!(a, b, "ids are never reused");
        assert_eq!(t.bytes, 4);
    }

    #[test]
    fn managed_mirrors_are_freed_only_as_managed_memory() {
        let mut t = Table::default();
        let managed = t.insert(Mirror {
            backing: Backing::Managed,
            ..mirror(64, 0x9000)
        });
        let plain = t.insert(mirror(64, 0xa000));
        assert!(
            t.remove(managed).is_none(),
            "a mirror free of managed memory"
        );
        assert!(
            t.remove_managed(0xa000).is_none(),
            "cuMemFree of DEVICEMAP memory"
        );
        assert!(t.remove_managed(0x9008).is_none(), "not the first byte");
        assert_eq!(t.managed_bytes, 64);
        assert_eq!(t.remove_managed(0x9000).map(|m| m.len), Some(64));
        assert_eq!(t.bytes, 64);
        assert_eq!(t.managed_bytes, 0);
        assert!(t.remove(plain).is_some());
    }

    #[test]
    fn variables_are_never_freed_and_go_with_their_library() {
        let mut t = Table::default();
        let var = t.insert(Mirror {
            backing: Backing::Variable { library: 0x4c00 },
            ..mirror(4, 0x9000)
        });
        assert_eq!(t.variable(0x4c00, 0x9000), Some(var));
        assert_eq!(t.variable(0x4d00, 0x9000), None, "another library's");
        assert!(t.remove(var).is_none(), "a mirror free of a variable");
        assert!(
            t.remove_managed(0x9000).is_none(),
            "cuMemFree of a variable"
        );
        assert!(!t.by_id[&var].is_pinned(), "never cuMemFreeHost'd");
        assert_eq!(t.managed_bytes, 4);
        assert_eq!(t.forget_library(0x4d00), 0);
        assert_eq!(t.forget_library(0x4c00), 1);
        assert_eq!(t.managed_bytes, 0);
        assert!(t.by_id.is_empty());
    }

    #[test]
    fn pushes_stay_inside_their_mirror() {
        let mut t = Table::default();
        let id = t.insert(mirror(16, 0x9000));
        let write = |id, offset, data: &'static [u8]| Push {
            writes: vec![Write { id, offset, data }],
        };
        assert!(t.admits(&write(id, 0, &[0; 16])));
        assert!(t.admits(&write(id, 12, &[0; 4])));
        assert!(!t.admits(&write(id, 13, &[0; 4])));
        assert!(!t.admits(&write(id, u64::MAX, &[0; 2])));
        assert!(!t.admits(&write(id + 1, 0, &[0; 1])));
        assert!(t.holds_device(0x9000, 16));
        assert!(!t.holds_device(0x9000, 17));
        assert!(!t.holds_device(u64::MAX, 2));
    }
}
