//! Copies that touch guest host memory, and pointer attributes.

use std::ffi::c_void;
use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, respond};
use crate::accounting::Direction;
use crate::dispatch::gate::{admit, Handles, Kind};
use crate::dispatch::ClientContext;

fn per_thread(name: &str) -> bool {
    name.ends_with("_ptds") || name.ends_with("_ptsz")
}

/// `cuMemcpyHtoD*`: `u64 dst, u64 stream, bytes data` → result. The `Async` forms run
/// asynchronously on the host: the driver stages pageable memory before it returns.
pub fn htod(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let dst: u64 = dec.get()?;
    let stream: u64 = dec.get()?;
    let data = dec.get_bytes()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let (ptr, len) = (data.as_ptr().cast::<c_void>(), data.len());
    // SAFETY: `ptr` is valid for `len` bytes for the whole call; the device pointer is the
    // guest's value, validated by the driver; the stream was admitted by the gate.
    let result = unsafe {
        match (name.contains("Async"), per_thread(name)) {
            (false, false) => real_or_unsupported!(cuMemcpyHtoD_v2, out)(dst, ptr, len),
            (false, true) => real_or_unsupported!(cuMemcpyHtoD_v2_ptds, out)(dst, ptr, len),
            (true, false) => real_or_unsupported!(cuMemcpyHtoDAsync_v2, out)(dst, ptr, len, stream),
            (true, true) => {
                real_or_unsupported!(cuMemcpyHtoDAsync_v2_ptsz, out)(dst, ptr, len, stream)
            }
        }
    };
    if result == CUresult::CUDA_SUCCESS {
        client.count_carried(Direction::HostToDevice, len);
    }
    respond(out, result);
    Ok(())
}

/// Largest single device-to-host copy a guest may ask for (the card's memory, rounded up).
const MAX_COPY: u64 = 1 << 38;

/// `cuMemcpyDtoH*`: `u64 src, u64 len, u64 stream` → result, `bytes data`. The `Async` forms
/// are made synchronous here: the bytes must exist before they can be sent.
pub fn dtoh(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let src: u64 = dec.get()?;
    let len: u64 = dec.get()?;
    let stream: u64 = dec.get()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    if len > MAX_COPY || len.saturating_add(4096) > transport::MAX_MESSAGE_LEN {
        // The bytes come back in one response; the shim splits larger copies.
        tracing::warn!(
            len,
            "refusing a device-to-host copy larger than one message"
        );
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let mut data = Vec::new();
    if data.try_reserve_exact(len as usize).is_err() {
        tracing::warn!(
            len,
            "cannot allocate the host buffer for a device-to-host copy"
        );
        respond(out, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        return Ok(());
    }
    data.resize(len as usize, 0);
    let (ptr, len) = (data.as_mut_ptr().cast::<c_void>(), data.len());
    // SAFETY: `ptr` is valid for writes of `len` bytes for the whole call (the async
    // forms are synchronised before `data` is read or dropped).
    let mut result = unsafe {
        match (name.contains("Async"), per_thread(name)) {
            (false, false) => real_or_unsupported!(cuMemcpyDtoH_v2, out)(ptr, src, len),
            (false, true) => real_or_unsupported!(cuMemcpyDtoH_v2_ptds, out)(ptr, src, len),
            (true, false) => real_or_unsupported!(cuMemcpyDtoHAsync_v2, out)(ptr, src, len, stream),
            (true, true) => {
                real_or_unsupported!(cuMemcpyDtoHAsync_v2_ptsz, out)(ptr, src, len, stream)
            }
        }
    };
    if result == CUresult::CUDA_SUCCESS && name.contains("Async") {
        // SAFETY: a stream the gate admitted.
        result = unsafe { real_or_unsupported!(cuStreamSynchronize, out)(stream) };
    }
    let mut enc = ResponseHeader::start(out, result.0);
    if result == CUresult::CUDA_SUCCESS {
        enc.put_bytes(&data);
        client.count_carried(Direction::DeviceToHost, data.len());
    }
    Ok(())
}

/// Whether `ptr` is memory the device owns (device, array or managed), as opposed to host
/// memory that merely has a unified address.
pub(super) fn is_device_memory(ptr: u64) -> bool {
    let Some(get) = crate::driver::real::cuPointerGetAttribute() else {
        return false;
    };
    let mut kind: u32 = 0;
    // SAFETY: MEMORY_TYPE writes one 32-bit value into `kind`.
    let r = unsafe {
        get(
            (&mut kind as *mut u32).cast(),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            ptr,
        )
    };
    r == CUresult::CUDA_SUCCESS && kind != CUmemorytype::CU_MEMORYTYPE_HOST.0
}

/// One end of a unified copy as the guest may name it: the device alias of one of its own
/// zero-copy blocks, device memory, or neither (other host-worker memory, refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuEnd {
    ZeroCopy,
    Device,
    Unreachable,
}

/// What `[ptr, ptr + len)` is as a GPU-side end.
fn gpu_end(client: &ClientContext, ptr: u64, len: u64) -> GpuEnd {
    if client.zero_copy.holds(ptr, len) || client.mirrors.holds(ptr, len) {
        GpuEnd::ZeroCopy
    } else if is_device_memory(ptr) {
        GpuEnd::Device
    } else {
        GpuEnd::Unreachable
    }
}

/// `cuMemcpy`/`cuMemcpyAsync` (unified addressing): `u64 dst, u64 src, u64 len, u64 stream`
/// → result. The guest routes copies touching its own plain memory through HtoD/DtoH; here
/// each end must be device memory or lie wholly inside the device alias of one of the client's
/// zero-copy blocks (`zero_copy.rs`), so a guest can never name other host-worker memory. This
/// is also how copies with a zero-copy end travel: only addresses, and the asynchronous forms
/// stay asynchronous.
pub fn unified(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let dst: u64 = dec.get()?;
    let src: u64 = dec.get()?;
    let len: u64 = dec.get()?;
    let stream: u64 = dec.get()?;
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let ends = (gpu_end(client, dst, len), gpu_end(client, src, len));
    if ends.0 == GpuEnd::Unreachable || ends.1 == GpuEnd::Unreachable {
        tracing::warn!(
            name,
            "unified copy with an end that is neither device memory nor the client's zero-copy memory refused"
        );
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let len = len as usize;
    // SAFETY: both ends are device memory the driver validates.
    let result = unsafe {
        match (name.contains("Async"), per_thread(name)) {
            (false, false) => real_or_unsupported!(cuMemcpy, out)(dst, src, len),
            (false, true) => real_or_unsupported!(cuMemcpy_ptds, out)(dst, src, len),
            (true, false) => real_or_unsupported!(cuMemcpyAsync, out)(dst, src, len, stream),
            (true, true) => real_or_unsupported!(cuMemcpyAsync_ptsz, out)(dst, src, len, stream),
        }
    };
    if result == CUresult::CUDA_SUCCESS {
        match ends {
            (GpuEnd::Device, GpuEnd::ZeroCopy) => {
                client.count_zero_copy(Direction::HostToDevice, len as u64)
            }
            (GpuEnd::ZeroCopy, _) => client.count_zero_copy(Direction::DeviceToHost, len as u64),
            _ => {}
        }
    }
    respond(out, result);
    Ok(())
}

fn is_host(kind: CUmemorytype) -> bool {
    kind == CUmemorytype::CU_MEMORYTYPE_HOST
}

/// One end of a 2D/3D copy that names memory by address (`DEVICE` or `UNIFIED`).
struct AddressEnd {
    kind: CUmemorytype,
    base: u64,
    x: usize,
    y: usize,
    z: usize,
    pitch: usize,
    rows_per_slice: usize,
}

impl AddressEnd {
    /// First byte and length of what the copy touches; `None` on overflow.
    fn span(&self, width: usize, height: usize, depth: usize) -> Option<(u64, u64)> {
        let slice = self.rows_per_slice.checked_mul(self.pitch)?;
        let start = self
            .x
            .checked_add(self.y.checked_mul(self.pitch)?)?
            .checked_add(self.z.checked_mul(slice)?)?;
        let len = depth
            .saturating_sub(1)
            .checked_mul(slice)?
            .checked_add(height.saturating_sub(1).checked_mul(self.pitch)?)?
            .checked_add(width)?;
        Some((self.base.checked_add(start as u64)?, len as u64))
    }

    /// Whether the guest may name this end: `DEVICE`/`UNIFIED` ends must be device memory or
    /// lie inside one of the client's zero-copy blocks; `HOST` and `ARRAY` ends are not
    /// addresses here.
    fn allowed(&self, client: &ClientContext, width: usize, height: usize, depth: usize) -> bool {
        if self.kind != CUmemorytype::CU_MEMORYTYPE_DEVICE
            && self.kind != CUmemorytype::CU_MEMORYTYPE_UNIFIED
        {
            return true;
        }
        if width == 0 || height == 0 || depth == 0 || is_device_memory(self.base) {
            return true;
        }
        self.span(width, height, depth).is_some_and(|(start, len)| {
            client.zero_copy.holds(start, len) || client.mirrors.holds(start, len)
        })
    }
}

/// The array fields of a 2D/3D copy's two ends (or a graph memcpy node's), each `(memory type,
/// array)`: an `ARRAY` end's array must be one of the client's; another end's array field is
/// cleared, since nothing checked it.
///
/// # Errors
/// The gate's refusal (`CUDA_ERROR_INVALID_HANDLE`) for an array the client was not given.
pub(super) fn array_ends(
    handles: &Handles,
    src: (CUmemorytype, &mut CUarray),
    dst: (CUmemorytype, &mut CUarray),
) -> Result<(), CUresult> {
    for (kind, array) in [src, dst] {
        if kind == CUmemorytype::CU_MEMORYTYPE_ARRAY {
            handles.admit(Kind::Array, *array as u64)?;
        } else {
            *array = std::ptr::null_mut();
        }
    }
    Ok(())
}

/// `cuMemcpy2D*`: `CUDA_MEMCPY2D` (raw; host pointers are ignored), `u64 stream`, then when the
/// source is host memory `bytes rows` (packed, `WidthInBytes × Height`) → result, then when the
/// destination is host memory `bytes rows` (packed). The guest resolves `UNIFIED` to `HOST` or
/// `DEVICE` before sending, except for zero-copy ends, which it sends as `UNIFIED` at their
/// device alias; `DEVICE`/`UNIFIED` ends that are not device memory must lie inside one of the
/// client's zero-copy blocks (`CUDA_ERROR_INVALID_VALUE` otherwise).
pub fn copy_2d(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: CUDA_MEMCPY2D is a plain C struct; its pointer fields are overwritten below
    // before the driver sees them.
    let mut copy: CUDA_MEMCPY2D = unsafe { dec.get_raw()? };
    let stream: u64 = dec.get()?;
    let packed = copy.WidthInBytes.checked_mul(copy.Height);
    let src_rows = if is_host(copy.srcMemoryType) {
        Some(dec.get_bytes()?)
    } else {
        None
    };
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    admit!(
        array_ends(
            &client.handles,
            (copy.srcMemoryType, &mut copy.srcArray),
            (copy.dstMemoryType, &mut copy.dstArray)
        ),
        out
    );
    let Some(packed) = packed.filter(|&n| n as u64 <= MAX_COPY) else {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    };
    let ends = [
        AddressEnd {
            kind: copy.srcMemoryType,
            base: copy.srcDevice,
            x: copy.srcXInBytes,
            y: copy.srcY,
            z: 0,
            pitch: copy.srcPitch,
            rows_per_slice: 0,
        },
        AddressEnd {
            kind: copy.dstMemoryType,
            base: copy.dstDevice,
            x: copy.dstXInBytes,
            y: copy.dstY,
            z: 0,
            pitch: copy.dstPitch,
            rows_per_slice: 0,
        },
    ];
    if !ends
        .iter()
        .all(|e| e.allowed(client, copy.WidthInBytes, copy.Height, 1))
    {
        tracing::warn!(name, "2D copy naming host-worker memory refused");
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let src_len = src_rows.map_or(0, <[u8]>::len);
    if let Some(rows) = src_rows {
        if rows.len() != packed {
            respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
            return Ok(());
        }
        copy.srcHost = rows.as_ptr().cast();
        (copy.srcXInBytes, copy.srcY, copy.srcPitch) = (0, 0, copy.WidthInBytes);
    } else {
        copy.srcHost = std::ptr::null();
    }
    let mut dst_rows = Vec::new();
    if is_host(copy.dstMemoryType) {
        dst_rows = vec![0u8; packed];
        copy.dstHost = dst_rows.as_mut_ptr().cast();
        (copy.dstXInBytes, copy.dstY, copy.dstPitch) = (0, 0, copy.WidthInBytes);
    } else {
        copy.dstHost = std::ptr::null_mut();
    }
    let is_async = name.contains("Async");
    // SAFETY: host pointers in `copy` point into buffers alive for the whole call
    // (and the async forms are synchronised below before they are dropped).
    let result = unsafe {
        match (is_async, per_thread(name), name.contains("Unaligned")) {
            (false, false, false) => real_or_unsupported!(cuMemcpy2D_v2, out)(&copy),
            (false, true, false) => real_or_unsupported!(cuMemcpy2D_v2_ptds, out)(&copy),
            (false, false, true) => real_or_unsupported!(cuMemcpy2DUnaligned_v2, out)(&copy),
            (false, true, true) => real_or_unsupported!(cuMemcpy2DUnaligned_v2_ptds, out)(&copy),
            (true, false, _) => real_or_unsupported!(cuMemcpy2DAsync_v2, out)(&copy, stream),
            (true, true, _) => real_or_unsupported!(cuMemcpy2DAsync_v2_ptsz, out)(&copy, stream),
        }
    };
    finish_copy(
        client,
        result,
        is_async,
        stream,
        (src_len, is_host(copy.dstMemoryType)),
        &dst_rows,
        out,
    )
}

/// The end of a 2D/3D copy: an asynchronous one is waited for (its host destination's rows travel
/// back in this response), then the result and, for a host destination, those rows. `ends` are
/// the bytes of host source rows that came with the request and whether the destination is
/// host memory (both counted as carried when the copy succeeded).
fn finish_copy(
    client: &ClientContext,
    mut result: CUresult,
    is_async: bool,
    stream: CUstream,
    (src_len, dst_is_host): (usize, bool),
    dst_rows: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if is_async && result == CUresult::CUDA_SUCCESS {
        // SAFETY: a stream the gate admitted.
        result = unsafe { real_or_unsupported!(cuStreamSynchronize, out)(stream) };
    }
    let mut enc = ResponseHeader::start(out, result.0);
    if result == CUresult::CUDA_SUCCESS {
        if src_len > 0 {
            client.count_carried(Direction::HostToDevice, src_len);
        }
        if dst_is_host {
            enc.put_bytes(dst_rows);
            client.count_carried(Direction::DeviceToHost, dst_rows.len());
        }
    }
    Ok(())
}

/// `cuMemcpy3D*`: like [`copy_2d`] with `CUDA_MEMCPY3D`; packed host data is
/// `WidthInBytes × Height × Depth`.
pub fn copy_3d(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // SAFETY: CUDA_MEMCPY3D is a plain C struct; its pointer fields are overwritten below.
    let mut copy: CUDA_MEMCPY3D = unsafe { dec.get_raw()? };
    let stream: u64 = dec.get()?;
    let packed = copy
        .WidthInBytes
        .checked_mul(copy.Height)
        .and_then(|n| n.checked_mul(copy.Depth));
    let src_rows = if is_host(copy.srcMemoryType) {
        Some(dec.get_bytes()?)
    } else {
        None
    };
    dec.finish()?;
    let stream = admit!(client.handles.stream(stream), out);
    let Some(packed) = packed.filter(|&n| n as u64 <= MAX_COPY) else {
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    };
    copy.reserved0 = std::ptr::null_mut();
    copy.reserved1 = std::ptr::null_mut();
    admit!(
        array_ends(
            &client.handles,
            (copy.srcMemoryType, &mut copy.srcArray),
            (copy.dstMemoryType, &mut copy.dstArray)
        ),
        out
    );
    let ends = [
        AddressEnd {
            kind: copy.srcMemoryType,
            base: copy.srcDevice,
            x: copy.srcXInBytes,
            y: copy.srcY,
            z: copy.srcZ,
            pitch: copy.srcPitch,
            rows_per_slice: copy.srcHeight,
        },
        AddressEnd {
            kind: copy.dstMemoryType,
            base: copy.dstDevice,
            x: copy.dstXInBytes,
            y: copy.dstY,
            z: copy.dstZ,
            pitch: copy.dstPitch,
            rows_per_slice: copy.dstHeight,
        },
    ];
    if !ends
        .iter()
        .all(|e| e.allowed(client, copy.WidthInBytes, copy.Height, copy.Depth))
    {
        tracing::warn!(name, "3D copy naming host-worker memory refused");
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    let src_len = src_rows.map_or(0, <[u8]>::len);
    if let Some(rows) = src_rows {
        if rows.len() != packed {
            respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
            return Ok(());
        }
        copy.srcHost = rows.as_ptr().cast();
        (copy.srcXInBytes, copy.srcY, copy.srcZ) = (0, 0, 0);
        (copy.srcPitch, copy.srcHeight) = (copy.WidthInBytes, copy.Height);
    } else {
        copy.srcHost = std::ptr::null();
    }
    let mut dst_rows = Vec::new();
    if is_host(copy.dstMemoryType) {
        dst_rows = vec![0u8; packed];
        copy.dstHost = dst_rows.as_mut_ptr().cast();
        (copy.dstXInBytes, copy.dstY, copy.dstZ) = (0, 0, 0);
        (copy.dstPitch, copy.dstHeight) = (copy.WidthInBytes, copy.Height);
    } else {
        copy.dstHost = std::ptr::null_mut();
    }
    let is_async = name.contains("Async");
    // SAFETY: as in `copy_2d`.
    let result = unsafe {
        match (is_async, per_thread(name)) {
            (false, false) => real_or_unsupported!(cuMemcpy3D_v2, out)(&copy),
            (false, true) => real_or_unsupported!(cuMemcpy3D_v2_ptds, out)(&copy),
            (true, false) => real_or_unsupported!(cuMemcpy3DAsync_v2, out)(&copy, stream),
            (true, true) => real_or_unsupported!(cuMemcpy3DAsync_v2_ptsz, out)(&copy, stream),
        }
    };
    finish_copy(
        client,
        result,
        is_async,
        stream,
        (src_len, is_host(copy.dstMemoryType)),
        &dst_rows,
        out,
    )
}

/// Size of the value `cuPointerGetAttribute` writes for `attribute`, or `None` for attributes
/// this build does not know.
pub fn pointer_attribute_size(attribute: u32) -> Option<usize> {
    Some(match attribute {
        2 | 6 | 8 | 9 | 10 | 13 | 15 | 16 | 21 => 4,
        1 | 3 | 4 | 7 | 11 | 12 | 14 | 17 | 18 | 19 | 20 => 8,
        5 => std::mem::size_of::<CUDA_POINTER_ATTRIBUTE_P2P_TOKENS>(),
        _ => return None,
    })
}

/// `cuPointerGetAttribute`: `u32 attribute, u64 ptr` → result, `bytes value`.
pub fn pointer_attribute(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let attribute: u32 = dec.get()?;
    let ptr: u64 = dec.get()?;
    dec.finish()?;
    let Some(size) = pointer_attribute_size(attribute) else {
        tracing::warn!(attribute, "unknown pointer attribute");
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    };
    let mut value = [0u8; 64];
    let get = real_or_unsupported!(cuPointerGetAttribute, out);
    // SAFETY: `value` has room for the largest attribute value (64 bytes ≥ every size above).
    let result = unsafe {
        get(
            value.as_mut_ptr().cast(),
            CUpointer_attribute(attribute),
            ptr,
        )
    };
    if result == CUresult::CUDA_SUCCESS {
        mint_attribute_handle(&client.handles, attribute, &value[..size]);
    }
    let mut enc = ResponseHeader::start(out, result.0);
    enc.put_bytes(&value[..size]);
    Ok(())
}

/// Records a handle the driver answered as a pointer attribute (the context or memory pool an
/// allocation belongs to): the client may pass it back.
pub(super) fn mint_attribute_handle(handles: &Handles, attribute: u32, value: &[u8]) {
    let kind = match CUpointer_attribute(attribute) {
        CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT => Kind::Context,
        CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE => Kind::MemoryPool,
        _ => return,
    };
    if let Some(bytes) = value.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        handles.mint(kind, u64::from_ne_bytes(bytes), 0);
    }
}
