//! Copies that touch guest memory, pinned host memory, pointer attributes. Pinned memory is a
//! zero-copy block in the shared region when the host could place one (`zero_copy.rs`): copies
//! and memsets with such an end run on the host through the block's device alias. Otherwise it
//! is plain guest memory recorded here. Host halves: `host/src/dispatch/handlers/memory.rs`,
//! which documents each wire format.
#![allow(non_snake_case)]

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cuda_headers::*;
use protocol::Decoder;

use super::staged;
use super::zero_copy::{self, NotPlaced, Resolved};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// Host allocations made by `cuMemAllocHost`/`cuMemHostAlloc`: address → (length, flags).
static PINNED: Mutex<BTreeMap<usize, (usize, u32)>> = Mutex::new(BTreeMap::new());

fn pinned() -> std::sync::MutexGuard<'static, BTreeMap<usize, (usize, u32)>> {
    PINNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks, in the flags, ranges registered with `cuMemHostRegister` (`host_register.rs`) rather
/// than allocated here.
pub(crate) const REGISTERED: u32 = 1 << 31;

/// Records a registered range; `false` if it overlaps one already known (plain or zero-copy).
pub(crate) fn register_pinned(base: usize, len: usize, flags: u32) -> bool {
    if zero_copy::overlaps(base, len) {
        return false;
    }
    let mut map = pinned();
    let end = base.saturating_add(len);
    let overlaps_before = map
        .range(..=base)
        .next_back()
        .is_some_and(|(&b, &(l, _))| b + l.max(1) > base);
    let overlaps_after = map.range(base..end).next().is_some();
    if overlaps_before || overlaps_after {
        return false;
    }
    map.insert(base, (len, flags | REGISTERED));
    true
}

/// Forgets a registered range starting at `base`; `false` if there is none.
pub(crate) fn unregister_pinned(base: usize) -> bool {
    let mut map = pinned();
    match map.get(&base) {
        Some(&(_, flags)) if flags & REGISTERED != 0 => map.remove(&base).is_some(),
        _ => false,
    }
}

/// A pinned allocation (or registered range) of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// First byte.
    pub base: usize,
    /// Length the application gave.
    pub len: usize,
    /// Its flags (`REGISTERED` marks `cuMemHostRegister` ranges).
    pub flags: u32,
    /// The zero-copy block, when the memory lives in the shared region.
    pub zero_copy: Option<zero_copy::Block>,
}

/// The pinned allocation containing guest address `addr`, if any.
pub(crate) fn pinned_containing(addr: usize) -> Option<Pinned> {
    if let Some(block) = zero_copy::containing(addr) {
        return Some(Pinned {
            base: block.guest,
            len: block.len,
            flags: block.flags,
            zero_copy: Some(block),
        });
    }
    let map = pinned();
    let (&base, &(len, flags)) = map.range(..=addr).next_back()?;
    (addr < base + len.max(1)).then_some(Pinned {
        base,
        len,
        flags,
        zero_copy: None,
    })
}

/// The address the GPU knows `addr` by: the device alias of a zero-copy byte (a program that
/// relies on unified addressing passes its pinned pointer as a device pointer), else `addr`.
fn device_address(addr: CUdeviceptr, len: usize) -> CUdeviceptr {
    zero_copy::resolve(addr, len).map_or(addr, |r| r.alias)
}

/// A copy between two addresses the GPU can reach (device memory, device aliases of zero-copy
/// blocks), run by the host on the stream: `id` is one of `cuMemcpy`, `cuMemcpy_ptds`,
/// `cuMemcpyAsync`, `cuMemcpyAsync_ptsz`. Nothing but addresses travels, so the asynchronous
/// forms are posted (see [`crate::posted`]): like a launch, they only enqueue work, and the
/// guest reads a zero-copy destination only after synchronising with the stream.
fn copy_on_host(
    id: u32,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    stream: CUstream,
) -> CuResult {
    let encode = |enc: &mut protocol::Encoder<'_>| {
        enc.put(dst);
        enc.put(src);
        enc.put(len as u64);
        enc.put(stream as u64);
    };
    if id == unified_id(true, false) || id == unified_id(true, true) {
        return crate::forward::post(id, encode);
    }
    call_with(id, encode, |_| Ok(()))
}

/// The unified-copy call the host runs a copy with a zero-copy end as.
fn unified_id(asynchronous: bool, per_thread: bool) -> u32 {
    match (asynchronous, per_thread) {
        (false, false) => shim_macros::cuda_call_id!(cuMemcpy),
        (false, true) => shim_macros::cuda_call_id!(cuMemcpy_ptds),
        (true, false) => shim_macros::cuda_call_id!(cuMemcpyAsync),
        (true, true) => shim_macros::cuda_call_id!(cuMemcpyAsync_ptsz),
    }
}

/// `on_stream`: `Some(per_thread)` for the asynchronous forms. A source inside a zero-copy
/// block is copied by the host from the block's device alias (stream-ordered, nothing shipped);
/// other sources travel with the request.
fn htod(
    id: u32,
    dst: CUdeviceptr,
    src: *const c_void,
    len: usize,
    stream: CUstream,
    on_stream: Option<bool>,
    per_thread: bool,
) -> CuResult {
    if len > 0 && src.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if let Some(from) = zero_copy::resolve(src as u64, len).filter(|_| len > 0) {
        return copy_on_host(
            unified_id(on_stream.is_some(), per_thread),
            device_address(dst, len),
            from.alias,
            len,
            stream,
        );
    }
    let pinned = pinned_containing(src as usize).is_some();
    if let (Some(per_thread), true) = (on_stream, pinned) {
        wait_for_stream(stream, per_thread)?;
    }
    // SAFETY: the caller (driver API contract) gives `len` readable bytes at `src`.
    let data = if len == 0 {
        &[][..]
    } else {
        // SAFETY: the caller (driver API contract) gives `len` readable bytes at `src`.
        unsafe { std::slice::from_raw_parts(src.cast::<u8>(), len) }
    };
    if len >= staged::MIN_STAGED
        && staged::htod(
            device_address(dst, len),
            data,
            stream,
            per_thread,
            on_stream.is_none(),
        )?
    {
        return Ok(());
    }
    for (start, n) in copy_chunks(data.len()) {
        let (at, chunk) = (dst + start as u64, &data[start..start + n]);
        let encode = |enc: &mut protocol::Encoder<'_>| {
            enc.put(at);
            enc.put(stream as u64);
            enc.put_bytes(chunk);
        };
        if on_stream.is_some() && !pinned {
            // Asynchronous from pageable memory: the bytes are captured now, as CUDA stages
            // them, so the copy may be posted (see `crate::posted`).
            crate::forward::post(id, encode)?;
        } else {
            call_with(id, encode, |_| Ok(()))?;
        }
    }
    Ok(())
}

/// The largest copy that travels as one message (over TCP, or below the staging threshold);
/// larger copies go as several, each well inside `transport::MAX_MESSAGE_LEN`.
const COPY_CHUNK: usize = 256 << 20;
const _: () = assert!(COPY_CHUNK as u64 + 4096 <= transport::MAX_MESSAGE_LEN);

/// `(offset, length)` of each message of a copy of `len` bytes, in order: the chunks go one
/// after the other on the same stream, so the copy keeps its place among the stream's work. An
/// empty copy is one empty message (the host answers it as the driver does).
fn copy_chunks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len.max(1))
        .step_by(COPY_CHUNK)
        .map(move |start| (start, COPY_CHUNK.min(len - start)))
}

/// A destination inside a zero-copy block is written by the host through the block's device
/// alias (the asynchronous forms stay asynchronous); other destinations get the bytes back with
/// the response.
fn dtoh(
    id: u32,
    dst: *mut c_void,
    src: CUdeviceptr,
    len: usize,
    stream: CUstream,
    asynchronous: bool,
    per_thread: bool,
) -> CuResult {
    if len > 0 && dst.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if let Some(to) = zero_copy::resolve(dst as u64, len).filter(|_| len > 0) {
        return copy_on_host(
            unified_id(asynchronous, per_thread),
            to.alias,
            device_address(src, len),
            len,
            stream,
        );
    }
    if len >= staged::MIN_STAGED {
        // SAFETY: the caller gives `len` writable bytes at `dst` (checked non-NULL above).
        let out = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), len) };
        if staged::dtoh(out, device_address(src, len), stream, per_thread)? {
            return Ok(());
        }
    }
    for (done, n) in copy_chunks(len) {
        call_with(
            id,
            |enc| {
                enc.put(src + done as u64);
                enc.put(n as u64);
                enc.put(stream as u64);
            },
            |dec| {
                let data = dec.get_bytes().map_err(bad_response)?;
                if data.len() != n {
                    return Err(CuError::UNKNOWN);
                }
                // SAFETY: the caller gives `len` writable bytes at `dst`, and `done + n <= len`;
                // `data` is the host's buffer, which cannot overlap guest application memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>().add(done), n)
                };
                Ok(())
            },
        )?;
    }
    Ok(())
}

macro_rules! htod_fns {
    ($($name:ident: $per_thread:expr),*) => { $(
        /// Host-to-device copy: the bytes travel with the request (none from zero-copy memory).
        ///
        /// # Safety
        /// `srcHost` is valid for `ByteCount` bytes.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize) -> CuResult {
            htod(shim_macros::cuda_call_id!($name), dstDevice, srcHost, ByteCount, std::ptr::null_mut(), None, $per_thread)
        }
    )* };
}
/// Waits until `stream` reaches this point, so that bytes captured now are the bytes the copy
/// would read when the stream gets to it. Needed for plain pinned sources: CUDA reads them at
/// stream time (an earlier host function may still write them), while pageable sources are
/// staged at the call. Zero-copy blocks need no wait: the host copies them on the stream.
pub(crate) fn wait_for_stream(stream: CUstream, per_thread: bool) -> CuResult {
    // SAFETY: a stream handle from the application, validated by the host.
    unsafe {
        if per_thread {
            crate::forward::generated::cuStreamSynchronize_ptsz(stream)
        } else {
            crate::forward::generated::cuStreamSynchronize(stream)
        }
    }
}

macro_rules! htod_async_fns {
    ($($name:ident: $per_thread:expr),*) => { $(
        /// Host-to-device copy on a stream. Pageable bytes are captured at the call, as CUDA
        /// stages them; pinned bytes once the stream has reached the copy.
        ///
        /// # Safety
        /// `srcHost` is valid for `ByteCount` bytes.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize, hStream: CUstream) -> CuResult {
            htod(shim_macros::cuda_call_id!($name), dstDevice, srcHost, ByteCount, hStream, Some($per_thread), $per_thread)
        }
    )* };
}
macro_rules! dtoh_fns {
    ($($name:ident: $per_thread:expr),*) => { $(
        /// Device-to-host copy: the bytes come back with the response.
        ///
        /// # Safety
        /// `dstHost` is valid for writes of `ByteCount` bytes.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize) -> CuResult {
            dtoh(shim_macros::cuda_call_id!($name), dstHost, srcDevice, ByteCount, std::ptr::null_mut(), false, $per_thread)
        }
    )* };
}
macro_rules! dtoh_async_fns {
    ($($name:ident: $per_thread:expr),*) => { $(
        /// Device-to-host copy on a stream, completed before it returns (except into zero-copy
        /// memory, which the host writes on the stream).
        ///
        /// # Safety
        /// `dstHost` is valid for writes of `ByteCount` bytes.
        ///
        /// # Errors
        /// The host's result.
        pub unsafe fn $name(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize, hStream: CUstream) -> CuResult {
            dtoh(shim_macros::cuda_call_id!($name), dstHost, srcDevice, ByteCount, hStream, true, $per_thread)
        }
    )* };
}
htod_fns!(cuMemcpyHtoD_v2: false, cuMemcpyHtoD_v2_ptds: true);
htod_async_fns!(cuMemcpyHtoDAsync_v2: false, cuMemcpyHtoDAsync_v2_ptsz: true);
dtoh_fns!(cuMemcpyDtoH_v2: false, cuMemcpyDtoH_v2_ptds: true);
dtoh_async_fns!(cuMemcpyDtoHAsync_v2: false, cuMemcpyDtoHAsync_v2_ptsz: true);

/// Where a unified address lives, as far as the guest can tell. The device alias of a
/// zero-copy block is host-worker memory, never guest memory.
pub(crate) fn is_guest_memory(addr: CUdeviceptr) -> CuResult<bool> {
    if pinned_containing(addr as usize).is_some() {
        return Ok(true);
    }
    if zero_copy::is_alias(addr) {
        return Ok(false);
    }
    let mut kind: u32 = 0;
    // SAFETY: MEMORY_TYPE writes one u32.
    let r = unsafe {
        cuPointerGetAttribute(
            (&mut kind as *mut u32).cast(),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            addr,
        )
    };
    match r {
        // Unknown to the device: ordinary guest memory.
        Err(e) if e.code() == CUresult::CUDA_ERROR_INVALID_VALUE => Ok(true),
        Err(e) => Err(e),
        Ok(()) => Ok(kind == CUmemorytype::CU_MEMORYTYPE_HOST.0),
    }
}

/// One end of a unified-address copy.
enum Side {
    /// Device memory (or an address the guest cannot place: the host checks it).
    Device(CUdeviceptr),
    /// A zero-copy byte range, reachable from both sides.
    ZeroCopy(Resolved),
    /// Guest memory the GPU cannot reach.
    Guest(usize),
}

impl Side {
    fn of(addr: CUdeviceptr, len: usize) -> CuResult<Side> {
        if let Some(r) = zero_copy::resolve(addr, len) {
            return Ok(Side::ZeroCopy(r));
        }
        Ok(if is_guest_memory(addr)? {
            Side::Guest(addr as usize)
        } else {
            Side::Device(addr)
        })
    }

    /// The address the host copies with, when the GPU can reach this end.
    fn for_host(&self) -> Option<CUdeviceptr> {
        match self {
            Side::Device(a) => Some(*a),
            Side::ZeroCopy(r) => Some(r.alias),
            Side::Guest(_) => None,
        }
    }

    /// The guest address, when the guest can reach this end.
    fn in_guest(&self) -> Option<usize> {
        match self {
            Side::Device(_) => None,
            Side::ZeroCopy(r) => Some(r.guest),
            Side::Guest(a) => Some(*a),
        }
    }
}

fn unified(
    id: u32,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    stream: CUstream,
    per_thread: bool,
) -> CuResult {
    let (to, from) = (Side::of(dst, len)?, Side::of(src, len)?);
    // Both ends reachable by the GPU, at least one not plain guest memory: the host copies, on
    // the stream. Zero-copy to zero-copy goes there too, to stay in stream order.
    if let (Some(d), Some(s)) = (to.for_host(), from.for_host()) {
        return copy_on_host(id, d, s, len, stream);
    }
    let guest_pair = (to.in_guest(), from.in_guest());
    if let (Some(d), Some(s)) = guest_pair {
        if matches!(
            (&to, &from),
            (Side::ZeroCopy(_), _) | (_, Side::ZeroCopy(_))
        ) && !stream.is_null()
        {
            // The GPU may still be writing the zero-copy end: copy once the stream gets here.
            wait_for_stream(stream, per_thread)?;
        }
        // SAFETY: both are guest memory valid for `len` bytes (driver API contract); CUDA
        // allows overlapping host-to-host copies to behave as memmove.
        unsafe { std::ptr::copy(s as *const u8, d as *mut u8, len) };
        return Ok(());
    }
    let (dst_guest, src_guest) = (matches!(to, Side::Guest(_)), matches!(from, Side::Guest(_)));
    let (htod_id, dtoh_id) = match (stream.is_null(), per_thread) {
        (true, false) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoD_v2),
            shim_macros::cuda_call_id!(cuMemcpyDtoH_v2),
        ),
        (true, true) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoD_v2_ptds),
            shim_macros::cuda_call_id!(cuMemcpyDtoH_v2_ptds),
        ),
        (false, false) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoDAsync_v2),
            shim_macros::cuda_call_id!(cuMemcpyDtoHAsync_v2),
        ),
        (false, true) => (
            shim_macros::cuda_call_id!(cuMemcpyHtoDAsync_v2_ptsz),
            shim_macros::cuda_call_id!(cuMemcpyDtoHAsync_v2_ptsz),
        ),
    };
    match (dst_guest, src_guest) {
        (false, true) => htod(
            htod_id,
            dst,
            src as usize as *const c_void,
            len,
            stream,
            (!stream.is_null()).then_some(per_thread),
            per_thread,
        ),
        (true, false) => dtoh(
            dtoh_id,
            dst as usize as *mut c_void,
            src,
            len,
            stream,
            !stream.is_null(),
            per_thread,
        ),
        // Both reachable by one side were handled above.
        _ => copy_on_host(id, dst, src, len, stream),
    }
}

/// Unified-address copy: routed by where each end lives.
///
/// # Safety
/// Guest ends are valid for `ByteCount` bytes.
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpy),
        dst,
        src,
        ByteCount,
        std::ptr::null_mut(),
        false,
    )
}
/// As [`cuMemcpy`], per-thread default stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpy_ptds(dst: CUdeviceptr, src: CUdeviceptr, ByteCount: usize) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpy_ptds),
        dst,
        src,
        ByteCount,
        std::ptr::null_mut(),
        true,
    )
}
/// As [`cuMemcpy`], on a stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpyAsync(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpyAsync),
        dst,
        src,
        ByteCount,
        hStream,
        false,
    )
}
/// As [`cuMemcpyAsync`], per-thread default stream.
///
/// # Safety
/// As [`cuMemcpy`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuMemcpyAsync_ptsz(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CuResult {
    unified(
        shim_macros::cuda_call_id!(cuMemcpyAsync_ptsz),
        dst,
        src,
        ByteCount,
        hStream,
        true,
    )
}

/// Resolves `UNIFIED` to `HOST` or `DEVICE`, moving the address to the matching field.
/// A device alias of a zero-copy block stays `UNIFIED`: it is host memory the GPU maps.
fn resolve(kind: &mut CUmemorytype, host: &mut usize, device: &mut CUdeviceptr) -> CuResult {
    if *kind == CUmemorytype::CU_MEMORYTYPE_UNIFIED && !zero_copy::is_alias(*device) {
        if is_guest_memory(*device)? {
            *kind = CUmemorytype::CU_MEMORYTYPE_HOST;
            *host = *device as usize;
        } else {
            *kind = CUmemorytype::CU_MEMORYTYPE_DEVICE;
        }
    }
    Ok(())
}

/// One end of a 2D/3D copy, after [`resolve`]: whether it is guest memory, and where its rows
/// are (a 2D copy is a 3D copy of depth 1 with `z = 0`).
struct End {
    guest: bool,
    base: usize,
    x: usize,
    y: usize,
    z: usize,
    pitch: usize,
    rows_per_slice: usize,
}

impl End {
    /// Address of row `row` of slice `slice`.
    fn row(&self, slice: usize, row: usize) -> usize {
        self.base
            + self.x
            + (self.y + row) * self.pitch
            + (self.z + slice) * self.rows_per_slice * self.pitch
    }

    /// First byte and length of the span `extent` touches, or `None` for an empty extent or
    /// arithmetic that overflows.
    fn bounds(&self, extent: Extent) -> Option<(usize, usize)> {
        if extent.width == 0 || extent.height == 0 || extent.depth == 0 {
            return None;
        }
        let slice = self.rows_per_slice.checked_mul(self.pitch)?;
        let start = self
            .base
            .checked_add(self.x)?
            .checked_add(self.y.checked_mul(self.pitch)?)?
            .checked_add(self.z.checked_mul(slice)?)?;
        let len = (extent.depth - 1)
            .checked_mul(slice)?
            .checked_add((extent.height - 1).checked_mul(self.pitch)?)?
            .checked_add(extent.width)?;
        start.checked_add(len)?;
        Some((start, len))
    }

    /// When this guest end lies wholly in one zero-copy block: the device alias its base
    /// address stands for, and the end becomes a GPU-side end (no rows travel).
    fn move_to_alias(&mut self, extent: Extent) -> Option<CUdeviceptr> {
        if !self.guest {
            return None;
        }
        let (start, len) = self.bounds(extent)?;
        let r = zero_copy::resolve(start as u64, len)?;
        self.guest = false;
        Some(r.alias.wrapping_sub((start - self.base) as u64))
    }
}

/// Rows of `width` bytes, `height` per slice, `depth` slices.
#[derive(Clone, Copy)]
struct Extent {
    width: usize,
    height: usize,
    depth: usize,
}

impl Extent {
    fn rows(self) -> impl Iterator<Item = (usize, usize)> {
        (0..self.depth).flat_map(move |slice| (0..self.height).map(move |row| (slice, row)))
    }
}

/// Gathers the source rows from guest memory, packed.
///
/// # Safety
/// Every row is readable (driver API contract for the copy descriptor).
unsafe fn gather(src: &End, extent: Extent) -> Vec<u8> {
    let mut out = Vec::with_capacity(extent.width * extent.height * extent.depth);
    for (slice, row) in extent.rows() {
        let at = src.row(slice, row);
        // SAFETY: per the contract, `width` bytes at `at` are readable.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(at as *const u8, extent.width) });
    }
    out
}

/// Scatters packed rows back into guest memory.
///
/// # Safety
/// Every row is writable.
unsafe fn scatter(data: &[u8], dst: &End, extent: Extent) {
    let mut chunks = data.chunks_exact(extent.width.max(1));
    for (slice, row) in extent.rows() {
        let Some(chunk) = chunks.next() else { return };
        let at = dst.row(slice, row);
        // SAFETY: per the contract, `width` bytes at `at` are writable.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), at as *mut u8, chunk.len()) };
    }
}

/// Sends a resolved 2D/3D descriptor with the guest source rows, and writes back the guest
/// destination rows. Plain pinned sources on a stream wait for the stream first; zero-copy ends
/// were turned into device-alias ends before and need no rows.
fn exchange<T: Copy>(
    id: u32,
    desc: &T,
    src: &End,
    dst: &End,
    extent: Extent,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    if let (Some(per_thread), true) = (
        on_stream,
        src.guest && pinned_containing(src.base).is_some(),
    ) {
        wait_for_stream(stream, per_thread)?;
    }
    call_with(
        id,
        |enc| {
            // SAFETY: the descriptor is a plain C struct; the host ignores its host pointers.
            unsafe { enc.put_raw(desc) };
            enc.put(stream as u64);
            if src.guest {
                // SAFETY: the descriptor promises readable source rows.
                enc.put_bytes(&unsafe { gather(src, extent) });
            }
        },
        |dec: &mut Decoder<'_>| {
            if dst.guest {
                let data = dec.get_bytes().map_err(bad_response)?;
                // SAFETY: the descriptor promises writable destination rows.
                unsafe { scatter(data, dst, extent) };
            }
            Ok(())
        },
    )
}

fn copy_2d(
    id: u32,
    copy: *const CUDA_MEMCPY2D,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    // SAFETY: the caller passes a valid descriptor (driver API contract).
    let mut c = unsafe { copy.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    let mut src_host = c.srcHost as usize;
    let mut dst_host = c.dstHost as usize;
    resolve(&mut c.srcMemoryType, &mut src_host, &mut c.srcDevice)?;
    resolve(&mut c.dstMemoryType, &mut dst_host, &mut c.dstDevice)?;
    let host = CUmemorytype::CU_MEMORYTYPE_HOST;
    let mut src = End {
        guest: c.srcMemoryType == host,
        base: src_host,
        x: c.srcXInBytes,
        y: c.srcY,
        z: 0,
        pitch: c.srcPitch,
        rows_per_slice: 0,
    };
    let mut dst = End {
        guest: c.dstMemoryType == host,
        base: dst_host,
        x: c.dstXInBytes,
        y: c.dstY,
        z: 0,
        pitch: c.dstPitch,
        rows_per_slice: 0,
    };
    let extent = Extent {
        width: c.WidthInBytes,
        height: c.Height,
        depth: 1,
    };
    let unified = CUmemorytype::CU_MEMORYTYPE_UNIFIED;
    if let Some(alias) = src.move_to_alias(extent) {
        (c.srcMemoryType, c.srcDevice, c.srcHost) = (unified, alias, std::ptr::null());
    }
    if let Some(alias) = dst.move_to_alias(extent) {
        (c.dstMemoryType, c.dstDevice, c.dstHost) = (unified, alias, std::ptr::null_mut());
    }
    exchange(id, &c, &src, &dst, extent, stream, on_stream)
}

fn copy_3d(
    id: u32,
    copy: *const CUDA_MEMCPY3D,
    stream: CUstream,
    on_stream: Option<bool>,
) -> CuResult {
    // SAFETY: the caller passes a valid descriptor (driver API contract).
    let mut c = unsafe { copy.as_ref() }
        .copied()
        .ok_or(CuError::INVALID_VALUE)?;
    let mut src_host = c.srcHost as usize;
    let mut dst_host = c.dstHost as usize;
    resolve(&mut c.srcMemoryType, &mut src_host, &mut c.srcDevice)?;
    resolve(&mut c.dstMemoryType, &mut dst_host, &mut c.dstDevice)?;
    let host = CUmemorytype::CU_MEMORYTYPE_HOST;
    let mut src = End {
        guest: c.srcMemoryType == host,
        base: src_host,
        x: c.srcXInBytes,
        y: c.srcY,
        z: c.srcZ,
        pitch: c.srcPitch,
        rows_per_slice: c.srcHeight,
    };
    let mut dst = End {
        guest: c.dstMemoryType == host,
        base: dst_host,
        x: c.dstXInBytes,
        y: c.dstY,
        z: c.dstZ,
        pitch: c.dstPitch,
        rows_per_slice: c.dstHeight,
    };
    let extent = Extent {
        width: c.WidthInBytes,
        height: c.Height,
        depth: c.Depth,
    };
    let unified = CUmemorytype::CU_MEMORYTYPE_UNIFIED;
    if let Some(alias) = src.move_to_alias(extent) {
        (c.srcMemoryType, c.srcDevice, c.srcHost) = (unified, alias, std::ptr::null());
    }
    if let Some(alias) = dst.move_to_alias(extent) {
        (c.dstMemoryType, c.dstDevice, c.dstHost) = (unified, alias, std::ptr::null_mut());
    }
    exchange(id, &c, &src, &dst, extent, stream, on_stream)
}

/// The exported 2D/3D copies: `copy_fns!(DESCRIPTOR, copy_fn, [sync names], [async name: per_thread])`.
/// Host rows travel packed; the asynchronous forms complete before they return when they write
/// plain guest memory.
macro_rules! copy_fns {
    ($desc:ty, $copy:ident, [$($sync:ident),*], [$($async_name:ident: $per_thread:expr),*]) => {
        $(
            #[doc = concat!("`", stringify!($sync), "`: see [`", stringify!($copy), "`].")]
            ///
            /// # Safety
            /// `pCopy` is a valid descriptor whose host rows are accessible.
            ///
            /// # Errors
            /// The host's result.
            pub unsafe fn $sync(pCopy: *const $desc) -> CuResult {
                $copy(shim_macros::cuda_call_id!($sync), pCopy, std::ptr::null_mut(), None)
            }
        )*
        $(
            #[doc = concat!("`", stringify!($async_name), "`: see [`", stringify!($copy), "`].")]
            ///
            /// # Safety
            /// As for the synchronous form.
            ///
            /// # Errors
            /// The host's result.
            pub unsafe fn $async_name(pCopy: *const $desc, hStream: CUstream) -> CuResult {
                $copy(shim_macros::cuda_call_id!($async_name), pCopy, hStream, Some($per_thread))
            }
        )*
    };
}
copy_fns!(
    CUDA_MEMCPY2D,
    copy_2d,
    [cuMemcpy2D_v2, cuMemcpy2D_v2_ptds, cuMemcpy2DUnaligned_v2, cuMemcpy2DUnaligned_v2_ptds],
    [cuMemcpy2DAsync_v2: false, cuMemcpy2DAsync_v2_ptsz: true]
);
copy_fns!(
    CUDA_MEMCPY3D,
    copy_3d,
    [cuMemcpy3D_v2, cuMemcpy3D_v2_ptds],
    [cuMemcpy3DAsync_v2: false, cuMemcpy3DAsync_v2_ptsz: true]
);

/// The value of `attribute` for a pinned byte, when the guest knows it: (value, size in bytes).
/// `at` is the guest address asked about; for a zero-copy byte, `alias` is its device alias.
pub(crate) fn pinned_attribute(
    pinned: &Pinned,
    at: usize,
    alias: Option<u64>,
    attribute: CUpointer_attribute,
) -> Option<(u64, usize)> {
    use CUpointer_attribute as A;
    Some(match attribute {
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => (u64::from(CUmemorytype::CU_MEMORYTYPE_HOST.0), 4),
        A::CU_POINTER_ATTRIBUTE_HOST_POINTER => (at as u64, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => (pinned.base as u64, 8),
        A::CU_POINTER_ATTRIBUTE_RANGE_SIZE => (pinned.len as u64, 8),
        A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => (alias?, 8),
        A::CU_POINTER_ATTRIBUTE_MAPPED => (u64::from(alias.is_some()), 4),
        A::CU_POINTER_ATTRIBUTE_IS_MANAGED => (0, 4),
        _ => return None,
    })
}

/// Writes the low `size` bytes of `value` to `data`.
///
/// # Safety
/// `data` is valid for `size` (≤ 8) bytes of writes.
pub(crate) unsafe fn write_value(data: *mut c_void, value: u64, size: usize) {
    // SAFETY: per the contract; `value` is 8 bytes, little-endian like the attribute.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&value as *const u64).cast::<u8>(),
            data.cast::<u8>(),
            size.min(8),
        )
    };
}

/// A pinned byte named by `ptr` (a guest address, or the device alias of a zero-copy byte):
/// the allocation, the guest address, and the device alias when it has one.
pub(crate) fn pinned_byte(ptr: CUdeviceptr) -> Option<(Pinned, usize, Option<u64>)> {
    let at = zero_copy::resolve(ptr, 1).map_or(ptr as usize, |r| r.guest);
    let pinned = pinned_containing(at)?;
    let alias = pinned.zero_copy.map(|b| b.alias + (at - b.guest) as u64);
    Some((pinned, at, alias))
}

/// Pointer attributes: answered here for the guest's own pinned allocations (the memory type,
/// host pointer, range and, for zero-copy blocks, the device alias); the rest of a zero-copy
/// block's attributes (context, device ordinal, …) come from the host for its alias.
///
/// # Safety
/// `data` is valid for the attribute's value.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL or unknown attributes; the host's result.
pub unsafe fn cuPointerGetAttribute(
    data: *mut c_void,
    attribute: CUpointer_attribute,
    ptr: CUdeviceptr,
) -> CuResult {
    if data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut asked = ptr;
    if let Some((pinned, at, alias)) = pinned_byte(ptr) {
        if let Some((value, size)) = pinned_attribute(&pinned, at, alias, attribute) {
            // SAFETY: `data` holds the attribute's value, `size` bytes.
            unsafe { write_value(data, value, size) };
            return Ok(());
        }
        match alias {
            Some(alias) => asked = alias,
            None if attribute == CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => {
                return Err(CuError::NOT_SUPPORTED)
            }
            None => {}
        }
    }
    call_with(
        shim_macros::cuda_call_id!(cuPointerGetAttribute),
        |enc| {
            enc.put(attribute.0);
            enc.put(asked);
        },
        |dec| {
            let value = dec.get_bytes().map_err(bad_response)?;
            // SAFETY: the host sends exactly the attribute's size, which `data` holds.
            unsafe {
                std::ptr::copy_nonoverlapping(value.as_ptr(), data.cast::<u8>(), value.len())
            };
            Ok(())
        },
    )
}

const PAGE: usize = 4096;

fn alloc_host(pp: *mut *mut c_void, bytesize: usize, flags: u32) -> CuResult {
    crate::init::host_transport()?;
    if pp.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let wants_alias = flags & zero_copy::DEVICEMAP != 0;
    match zero_copy::alloc(bytesize, flags) {
        Ok(p) => {
            // SAFETY: `pp` is valid for one pointer write (checked non-NULL; driver API contract).
            unsafe { pp.write(p.cast()) };
            return Ok(());
        }
        Err(NotPlaced::Disabled) => {}
        Err(NotPlaced::OverTcp) if wants_alias => {
            log!(
                Level::Warn,
                "cuMemHostAlloc: DEVICEMAP memory needs the shared region; over TCP the GPU cannot map guest memory"
            );
            return Err(CuError::NOT_SUPPORTED);
        }
        Err(NotPlaced::OverTcp) => {}
        Err(NotPlaced::Refused(e)) if wants_alias => {
            log!(
                Level::Warn,
                "cuMemHostAlloc: cannot place {bytesize} bytes of DEVICEMAP memory in the shared region ({e:?}); grow the host's region (VGPU_REGION_SIZE / --region-size)"
            );
            return Err(CuError::OUT_OF_MEMORY);
        }
        Err(NotPlaced::Refused(e)) => zero_copy::report_fallback(e),
    }
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes `p` on success; the alignment is a power of two.
    let rc = unsafe { libc::posix_memalign(&mut p, PAGE, bytesize.max(1)) };
    if rc != 0 {
        return Err(CuError::OUT_OF_MEMORY);
    }
    pinned().insert(p as usize, (bytesize, flags));
    // SAFETY: `pp` is valid for one pointer write (checked non-NULL; driver API contract).
    unsafe { pp.write(p) };
    Ok(())
}

/// Pinned memory: a zero-copy block in the shared region the GPU maps, or page-aligned guest
/// memory when none can be placed (see [`zero_copy`]).
///
/// # Safety
/// `pp` is valid for one pointer write.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY`, `CUDA_ERROR_INVALID_VALUE`, `CUDA_ERROR_NOT_INITIALIZED`.
pub unsafe fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CuResult {
    alloc_host(pp, bytesize, 0)
}

/// As [`cuMemAllocHost_v2`], with the 32-bit size of the original API.
///
/// # Safety
/// As [`cuMemAllocHost_v2`].
///
/// # Errors
/// As [`cuMemAllocHost_v2`].
pub unsafe fn cuMemAllocHost(pp: *mut *mut c_void, bytesize: u32) -> CuResult {
    alloc_host(pp, bytesize as usize, 0)
}

/// As [`cuMemAllocHost_v2`], remembering `Flags`. With `CU_MEMHOSTALLOC_DEVICEMAP`, memory
/// that cannot be placed in the shared region fails (`CUDA_ERROR_OUT_OF_MEMORY`, or
/// `CUDA_ERROR_NOT_SUPPORTED` over TCP) instead of falling back to memory without an alias.
///
/// # Safety
/// As [`cuMemAllocHost_v2`].
///
/// # Errors
/// As [`cuMemAllocHost_v2`].
pub unsafe fn cuMemHostAlloc(pp: *mut *mut c_void, bytesize: usize, Flags: u32) -> CuResult {
    alloc_host(pp, bytesize, Flags)
}

/// Frees memory from [`cuMemAllocHost_v2`]/[`cuMemHostAlloc`]. A zero-copy block is
/// unregistered on the host and returned to the bulk area.
///
/// # Safety
/// `p` came from one of them and is not used afterwards.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for any other pointer; the host's result for a zero-copy block.
pub unsafe fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    if let Some(result) = zero_copy::free(p as usize) {
        return result;
    }
    {
        let mut map = pinned();
        match map.get(&(p as usize)) {
            Some(&(_, flags)) if flags & REGISTERED == 0 => map.remove(&(p as usize)),
            _ => return Err(CuError::INVALID_VALUE),
        };
    }
    // SAFETY: `p` came from posix_memalign and was just removed from the table.
    unsafe { libc::free(p) };
    Ok(())
}

/// The flags given to [`cuMemHostAlloc`].
///
/// # Safety
/// `pFlags` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for memory not from it.
pub unsafe fn cuMemHostGetFlags(pFlags: *mut u32, p: *mut c_void) -> CuResult {
    let pinned = pinned_containing(p as usize).ok_or(CuError::INVALID_VALUE)?;
    if pFlags.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: checked non-NULL; driver API contract.
    unsafe { pFlags.write(pinned.flags & !REGISTERED) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_go_in_chunks_in_order_and_an_empty_one_as_one_message() {
        assert_eq!(copy_chunks(0).collect::<Vec<_>>(), [(0, 0)]);
        assert_eq!(copy_chunks(5).collect::<Vec<_>>(), [(0, 5)]);
        assert_eq!(
            copy_chunks(COPY_CHUNK).collect::<Vec<_>>(),
            [(0, COPY_CHUNK)]
        );
        assert_eq!(
            copy_chunks(2 * COPY_CHUNK + 3).collect::<Vec<_>>(),
            [
                (0, COPY_CHUNK),
                (COPY_CHUNK, COPY_CHUNK),
                (2 * COPY_CHUNK, 3)
            ]
        );
    }

    #[test]
    fn gather_and_scatter_walk_the_same_sub_box() {
        // A 4-byte pitch, 3 rows a slice, 2 slices; the copy takes 2×2×2 bytes at (1, 1, 0).
        let source: Vec<u8> = (0..24).collect();
        let end = |base: usize| End {
            guest: true,
            base,
            x: 1,
            y: 1,
            z: 0,
            pitch: 4,
            rows_per_slice: 3,
        };
        let extent = Extent {
            width: 2,
            height: 2,
            depth: 2,
        };
        // SAFETY: every row of the box lies inside `source`.
        let packed = unsafe { gather(&end(source.as_ptr() as usize), extent) };
        assert_eq!(packed, [5, 6, 9, 10, 17, 18, 21, 22]);
        let mut target = vec![0u8; 24];
        // SAFETY: as above, for `target`.
        unsafe { scatter(&packed, &end(target.as_mut_ptr() as usize), extent) };
        let moved: Vec<usize> = (0..24).filter(|&i| target[i] != 0).collect();
        assert_eq!(moved, [5, 6, 9, 10, 17, 18, 21, 22]);
        assert!(moved.iter().all(|&i| target[i] == source[i]));
    }
}
