//! Host↔device copies (`cuMemcpyHtoD*`, `cuMemcpyDtoH*`): pinned ends run on the host
//! through the zero-copy alias, pageable ones travel inline or through staging, in chunks.

#![allow(non_snake_case)]

use super::*;

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
pub(super) fn copy_on_host(
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
pub(super) fn htod(
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
pub(super) fn dtoh(
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
    if len > 0 && guest_host_source(src, len) {
        // A host address as the source (unified addressing): pinned memory of this process that
        // the GPU does not map (guest memory, or a DEVICEMAP mirror over TCP), which the
        // worker's driver would refuse. The copy is host to host: once the stream has reached
        // it (and a mirror has pulled what the device wrote), it is made here.
        wait_for_stream(stream, per_thread)?;
        // SAFETY: `src` lies inside a pinned allocation of this process (checked above) and the
        // caller gives `len` writable bytes at `dst`; `copy` allows overlap.
        unsafe { std::ptr::copy(src as usize as *const u8, dst.cast::<u8>(), len) };
        return Ok(());
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

/// Whether `[src, src + len)` lies in one pinned allocation of this process that is not a
/// zero-copy block (those the worker maps at the same address) nor managed memory (whose
/// address the worker's driver knows).
fn guest_host_source(src: CUdeviceptr, len: usize) -> bool {
    let Ok(addr) = usize::try_from(src) else {
        return false;
    };
    pinned_containing(addr).is_some_and(|p| {
        p.zero_copy.is_none()
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= p.base + p.len)
    })
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
}
