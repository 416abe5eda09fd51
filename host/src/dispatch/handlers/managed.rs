//! Managed memory (`cuMemAllocManaged`): one pointer that the guest's CPU and the GPU both
//! dereference. Guest half: `shim/src/handlers/managed.rs`; the rules, and where they differ
//! from native, are in `docs/handlers.md`, "Managed memory".
//!
//! The driver's own managed memory would live in this worker's address space, where the guest
//! cannot reach it. So the worker backs each allocation with memory both sides see at one
//! address:
//! - a region client: a bulk block of the shared region, mapped here at the guest's own address
//!   of it and registered (`zero_copy.rs`, [`Registrations::place_managed`]); the device pointer
//!   must equal that address, or the allocation is refused;
//! - a socket client: a mirror (`mirror.rs`, [`mirror::create`]) of pinned memory, which the
//!   guest maps at the mirror's device pointer and keeps equal at synchronising calls.
//!
//! The worker keeps the only table that counts (in those two modules, each block marked
//! managed): `cuMemPrefetchAsync`, `cuMemAdvise` and `cuStreamAttachMemAsync` are accepted only
//! on a range inside one of the client's managed allocations, and `cuMemFree` of one frees it.
//! Allocations count against the client's memory quota (`dispatch/quota.rs`).
//!
//! [`Registrations::place_managed`]: super::zero_copy::Registrations::place_managed
//! [`mirror::create`]: super::mirror::create

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::respond;
use crate::dispatch::gate::admit;
use crate::dispatch::ClientContext;

/// `CU_DEVICE_CPU`: the host as a prefetch or advice target.
const DEVICE_CPU: i32 = -1;

fn answer(out: &mut Vec<u8>, result: CUresult) -> Result<(), DecodeError> {
    respond(out, result);
    Ok(())
}

/// Whether `flags` is one attach mode of `cuMemAllocManaged`: `CU_MEM_ATTACH_GLOBAL` or
/// `CU_MEM_ATTACH_HOST`, as the driver requires.
fn valid_alloc_flags(flags: u32) -> bool {
    flags == CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL.0
        || flags == CUmemAttach_flags::CU_MEM_ATTACH_HOST.0
}

/// `cuMemAllocManaged`: `u64 len, u32 flags, u64 guest_bulk_base` → result, `u64 handle, u64
/// span, u64 device_ptr`. A region client gets a bulk block (handle = its bulk offset, span =
/// its length in whole blocks) mapped and registered here at `guest_bulk_base + offset`, whose
/// device pointer is that address; a socket client (no region) gets a mirror (handle = its
/// mirror id, span = `len`), which its guest maps at `device_ptr`. `len` 0 or `flags` other than
/// `CU_MEM_ATTACH_GLOBAL`/`CU_MEM_ATTACH_HOST`: `CUDA_ERROR_INVALID_VALUE`; past the client's
/// memory quota, its pinning share of the bulk area or the mirrors' cap:
/// `CUDA_ERROR_OUT_OF_MEMORY`; a block whose device pointer would differ from the guest's
/// pointer: `CUDA_ERROR_NOT_SUPPORTED` (one log line).
pub fn alloc(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len: u64 = dec.get()?;
    let flags: u32 = dec.get()?;
    let guest_bulk_base: u64 = dec.get()?;
    dec.finish()?;
    if len == 0 || !valid_alloc_flags(flags) {
        tracing::warn!(
            len,
            flags,
            "managed allocation with a zero size or bad flags"
        );
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let reservation = match client.quota.reserve(len) {
        Ok(r) => r,
        Err(refused) => return answer(out, refused),
    };
    let placed = if client.zero_copy.has_region() {
        client.zero_copy.place_managed(len, guest_bulk_base)
    } else {
        super::mirror::create(&client.mirrors, len, true).map(|(id, device)| (id, len, device))
    };
    let (handle, span, device) = match placed {
        Ok(p) => p,
        Err(refused) => {
            client.quota.cancel(reservation);
            return answer(out, refused);
        }
    };
    client.quota.commit(reservation, device, len);
    tracing::debug!(len, flags, device, "managed memory allocated");
    let mut enc = ResponseHeader::start(out, 0);
    enc.put(handle);
    enc.put(span);
    enc.put(device);
    Ok(())
}

/// `cuLibraryGetManaged`: `u64 library, bytes name` → result, `u64 id, u64 dptr, u64 bytes`.
/// A `__managed__` variable of one of the client's libraries (the gate admits the handle, else
/// its refusal): the driver's answer, recorded as a mirror of the driver's own managed memory
/// (`mirror::Mirrors::variable`), which the guest maps at `dptr` and keeps equal by the
/// mirror's rules (any transport: the driver chose the address, so a region block cannot stand
/// in). `id` names it in pushes and pulls; nothing else is minted, and the record goes when the
/// library is unloaded (`launch::unload`). Past the managed mirrors' cap:
/// `CUDA_ERROR_OUT_OF_MEMORY`; the driver's error otherwise (`dptr`, `bytes` and `id` 0).
pub fn library_get_managed(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let owner: u64 = dec.get()?;
    let name = super::device::c_string(dec.get_bytes()?);
    dec.finish()?;
    let library = admit!(client.handles.library(owner), out);
    let get = super::real_or_unsupported!(cuLibraryGetManaged, out);
    let (mut dptr, mut bytes): (CUdeviceptr, usize) = (0, 0);
    // SAFETY: out-pointers to live locals, `name` NUL-terminated; the library was admitted by
    // the gate.
    let r = unsafe { get(&mut dptr, &mut bytes, library, name.as_ptr()) };
    let id = if r == CUresult::CUDA_SUCCESS {
        if dptr == 0 || bytes == 0 {
            tracing::warn!(dptr, bytes, "cuLibraryGetManaged answered no memory");
            return answer(out, CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
        match client.mirrors.variable(owner, dptr, bytes as u64) {
            Ok(id) => id,
            Err(refused) => return answer(out, refused),
        }
    } else {
        0
    };
    let mut enc = ResponseHeader::start(out, r.0);
    enc.put(id);
    enc.put(dptr);
    enc.put(bytes as u64);
    Ok(())
}

/// Frees the client's managed allocation whose first byte is `address` (`cuMemFree_v2`, from
/// `quota::free`), giving its size back to the quota; `None` when `address` is not one.
pub(super) fn release(client: &ClientContext, address: u64) -> Option<CUresult> {
    let result = client
        .zero_copy
        .release_managed(address)
        .or_else(|| client.mirrors.release_managed(address))?;
    client.quota.release(address);
    Some(result)
}

/// The client's managed allocation holding `[ptr, ptr + count)`: (first byte, length).
fn managed_range(client: &ClientContext, ptr: u64, count: u64) -> Option<(u64, u64)> {
    if count == 0 {
        return None;
    }
    client
        .zero_copy
        .managed_holding(ptr, count)
        .or_else(|| client.mirrors.managed_holding(ptr, count))
}

/// Checks that `device` names a device of this worker, or the CPU when `cpu_ok`.
///
/// # Errors
/// `CUDA_ERROR_INVALID_DEVICE`, as the driver answers.
fn check_device(device: i32, cpu_ok: bool) -> Result<(), CUresult> {
    let known = if device == DEVICE_CPU {
        cpu_ok
    } else {
        crate::driver::result::device_count().is_ok_and(|n| (0..n).contains(&device))
    };
    known
        .then_some(())
        .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
}

/// Checks that `location` is one a prefetch or advice may name: a device of this worker, the
/// host, a host NUMA node, or the current thread's.
///
/// # Errors
/// `CUDA_ERROR_INVALID_DEVICE` for a device this worker does not have,
/// `CUDA_ERROR_INVALID_VALUE` for any other location.
fn check_location(location: &CUmemLocation) -> Result<(), CUresult> {
    use CUmemLocationType as T;
    match location.type_ {
        T::CU_MEM_LOCATION_TYPE_DEVICE => check_device(location.id, false),
        T::CU_MEM_LOCATION_TYPE_HOST | T::CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT => Ok(()),
        T::CU_MEM_LOCATION_TYPE_HOST_NUMA if location.id >= 0 => Ok(()),
        _ => Err(CUresult::CUDA_ERROR_INVALID_VALUE),
    }
}

/// `cuMemPrefetchAsync(_ptsz)` (`u64 ptr, u64 count, i32 device, u64 stream`) and
/// `cuMemPrefetchAsync_v2(_ptsz)` (`u64 ptr, u64 count, CUmemLocation, u32 flags, u64 stream`):
/// the generated wire formats. Accepted, and nothing migrated (the memory already lives where
/// both sides reach it), when the range lies inside one of the client's managed allocations
/// (else `CUDA_ERROR_INVALID_VALUE`, as the driver answers for memory that is not managed), the
/// target is a device or the CPU (else `CUDA_ERROR_INVALID_DEVICE`; a location of another kind:
/// `CUDA_ERROR_INVALID_VALUE`), `flags` is 0 and the stream
/// passes the gate. The driver never sees the call: its managed-memory calls would refuse the
/// registered or pinned memory that stands in for managed memory.
pub fn prefetch(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let ptr: u64 = dec.get()?;
    let count: u64 = dec.get()?;
    let (target, flags) = if name.starts_with("cuMemPrefetchAsync_v2") {
        // SAFETY: `CUmemLocation` is plain data (two 32-bit fields); any bit pattern is a value.
        let location: CUmemLocation = unsafe { dec.get_raw()? };
        let flags: u32 = dec.get()?;
        (check_location(&location), flags)
    } else {
        let device: i32 = dec.get()?;
        (check_device(device, true), 0)
    };
    let stream: u64 = dec.get()?;
    dec.finish()?;
    if managed_range(client, ptr, count).is_none() || flags != 0 {
        tracing::warn!(
            ptr,
            count,
            flags,
            "prefetch of memory that is not the client's managed memory"
        );
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    if let Err(refused) = target {
        return answer(out, refused);
    }
    admit!(client.handles.stream(stream), out);
    answer(out, CUresult::CUDA_SUCCESS)
}

/// `cuMemAdvise` (`u64 ptr, u64 count, u32 advice, i32 device`) and `cuMemAdvise_v2` (`u64 ptr,
/// u64 count, u32 advice, CUmemLocation`): the generated wire formats. Accepted, and without
/// effect (there is no migration for the advice to steer), when the range lies inside one of
/// the client's managed allocations (else `CUDA_ERROR_INVALID_VALUE`), the advice is one of the
/// six the driver knows (else `CUDA_ERROR_INVALID_VALUE`) and, for the location advices, the
/// target is a device or the CPU (else `CUDA_ERROR_INVALID_DEVICE`; the read-mostly advices
/// ignore it, as the driver does).
pub fn advise(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let ptr: u64 = dec.get()?;
    let count: u64 = dec.get()?;
    let advice = CUmem_advise(dec.get()?);
    let target = if name == "cuMemAdvise_v2" {
        // SAFETY: `CUmemLocation` is plain data (two 32-bit fields); any bit pattern is a value.
        let location: CUmemLocation = unsafe { dec.get_raw()? };
        check_location(&location)
    } else {
        check_device(dec.get()?, true)
    };
    dec.finish()?;
    use CUmem_advise as A;
    let (known, uses_target) = match advice {
        A::CU_MEM_ADVISE_SET_READ_MOSTLY | A::CU_MEM_ADVISE_UNSET_READ_MOSTLY => (true, false),
        A::CU_MEM_ADVISE_SET_PREFERRED_LOCATION
        | A::CU_MEM_ADVISE_UNSET_PREFERRED_LOCATION
        | A::CU_MEM_ADVISE_SET_ACCESSED_BY
        | A::CU_MEM_ADVISE_UNSET_ACCESSED_BY => (true, true),
        _ => (false, false),
    };
    if managed_range(client, ptr, count).is_none() || !known {
        tracing::warn!(
            ptr,
            count,
            advice = advice.0,
            "advice refused: not the client's managed memory, or unknown"
        );
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    if let (true, Err(refused)) = (uses_target, target) {
        return answer(out, refused);
    }
    answer(out, CUresult::CUDA_SUCCESS)
}

/// `cuStreamAttachMemAsync(_ptsz)`: `u64 stream, u64 ptr, u64 length, u32 flags`, the generated
/// wire format. Accepted without effect when `ptr` starts one of the client's managed
/// allocations and `length` is 0 or its whole length (else `CUDA_ERROR_INVALID_VALUE`),
/// `flags` is one of `CU_MEM_ATTACH_GLOBAL`, `_HOST`, `_SINGLE` (else
/// `CUDA_ERROR_INVALID_VALUE`) and the stream passes the gate.
pub fn attach(
    _: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let stream: u64 = dec.get()?;
    let ptr: u64 = dec.get()?;
    let length: u64 = dec.get()?;
    let flags: u32 = dec.get()?;
    dec.finish()?;
    let whole = managed_range(client, ptr, 1)
        .is_some_and(|(base, len)| base == ptr && (length == 0 || length == len));
    let flags_ok = valid_alloc_flags(flags) || flags == CUmemAttach_flags::CU_MEM_ATTACH_SINGLE.0;
    if !whole || !flags_ok {
        tracing::warn!(
            ptr,
            length,
            flags,
            "attach refused: not a whole managed allocation of the client, or bad flags"
        );
        return answer(out, CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    admit!(client.handles.stream(stream), out);
    answer(out, CUresult::CUDA_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_attach_mode_is_an_allocation_flag() {
        assert!(valid_alloc_flags(1));
        assert!(valid_alloc_flags(2));
        assert!(!valid_alloc_flags(0));
        assert!(!valid_alloc_flags(3));
        assert!(
            !valid_alloc_flags(4),
            "SINGLE is for cuStreamAttachMemAsync only"
        );
    }

    #[test]
    fn host_locations_need_no_device() {
        let at = |t: u32, id: i32| CUmemLocation {
            type_: CUmemLocationType(t),
            id,
        };
        let invalid = Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(check_location(&at(2, 1234)), Ok(()), "HOST ignores the id");
        assert_eq!(
            check_location(&at(4, -7)),
            Ok(()),
            "so does HOST_NUMA_CURRENT"
        );
        assert_eq!(check_location(&at(3, 0)), Ok(()));
        assert_eq!(
            check_location(&at(3, -1)),
            invalid,
            "NUMA nodes count from 0"
        );
        assert_eq!(check_location(&at(0, 0)), invalid, "INVALID");
        assert_eq!(check_location(&at(99, 0)), invalid);
        assert_eq!(
            check_device(DEVICE_CPU, false),
            Err(CUresult::CUDA_ERROR_INVALID_DEVICE)
        );
        assert_eq!(check_device(DEVICE_CPU, true), Ok(()));
    }
}
