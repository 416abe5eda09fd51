//! Allocations and frees counted against the client's memory quota (`dispatch/quota.rs`), and
//! `cuMemGetInfo` answering with it. Each wraps the generated host half of its function, whose
//! wire format it keeps: the arguments are read ahead from a copy of the request, the generated
//! half runs (its handle gate included), and its response is read back. Allocations and frees
//! are counted with or without a quota (the memory a client holds is reported, `accounting/`);
//! without one `cuMemGetInfo` is the generated half.

use std::sync::Arc;

use cuda_headers::CUresult;
use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{generated_half, respond};
use crate::dispatch::gate::Kind;
use crate::dispatch::ClientContext;

/// An out-pointer argument as the generated marshalling sends it: present or not.
fn out_pointer(dec: &mut Decoder<'_>) -> Result<bool, DecodeError> {
    // SAFETY: a device address or size is plain data.
    Ok(unsafe { dec.get_opt_raw::<u64>() }?.is_some())
}

/// `cuMemAlloc_v2`, `cuMemAllocPitch_v2`, `cuMemAlloc(FromPool)Async(_ptsz)`: generated wire
/// formats (`inout dptr`, [`inout pitch, width, height, element size` | `bytesize`, …]).
pub fn alloc(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let pitched = name == "cuMemAllocPitch_v2";
    let mut ahead = dec.clone();
    out_pointer(&mut ahead)?;
    let (asked, height) = if pitched {
        out_pointer(&mut ahead)?;
        let width: u64 = ahead.get()?;
        let height: u64 = ahead.get()?;
        (width.saturating_mul(height), height)
    } else {
        (ahead.get::<u64>()?, 0)
    };
    let reservation = match client.quota.reserve(asked) {
        Ok(r) => r,
        Err(refused) => {
            respond(out, refused);
            return Ok(());
        }
    };
    generated_half(name, client, dec, out)?;
    let mut back = Decoder::new(out);
    let made = ResponseHeader::read(&mut back)
        .ok()
        .filter(|h| h.result == 0)
        .and_then(|_| {
            let address: u64 = back.get().ok()?;
            let size = if pitched {
                back.get::<u64>().ok()?.saturating_mul(height)
            } else {
                asked
            };
            Some((address, size))
        });
    match made {
        Some((address, size)) => client.quota.commit(reservation, address, size),
        None => client.quota.cancel(reservation),
    }
    Ok(())
}

/// `cuMemFree_v2`, `cuMemFreeAsync(_ptsz)`, `cuMemRelease`: generated wire formats (`u64
/// address or handle`, …). `cuMemRelease` gives the memory back with the handle's last
/// reference, or later with its last mapping. `cuMemFree_v2` of the client's managed memory frees it here
/// (`managed.rs`); the driver never saw it as an allocation. A `__managed__` variable
/// (`managed::library_get_managed`) is refused (`CUDA_ERROR_INVALID_VALUE`): the driver placed
/// it, and only its library's unload frees it.
pub fn free(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let address: u64 = dec.clone().get()?;
    if name != "cuMemRelease" && client.mirrors.holds_variable(address) {
        tracing::warn!(address, name, "free of a __managed__ variable refused");
        respond(out, CUresult::CUDA_ERROR_INVALID_VALUE);
        return Ok(());
    }
    if name == "cuMemFree_v2" {
        if let Some(result) = super::managed::release(client, address) {
            dec.get::<u64>()?;
            dec.finish()?;
            respond(out, result);
            return Ok(());
        }
    }
    generated_half(name, client, dec, out)?;
    if !succeeded(out) {
        return Ok(());
    }
    if name == "cuMemRelease" {
        // One reference to the handle went (the generated half's gate step); the memory goes
        // with the last, once unmapped.
        if !client.handles.holds(Kind::Allocation, address) {
            client.quota.handle_released(address);
        }
    } else {
        client.quota.release(address);
    }
    Ok(())
}

/// Whether the response in `out` reports success.
fn succeeded(out: &[u8]) -> bool {
    out.get(..4) == Some(&[0, 0, 0, 0][..])
}

/// `cuMemMap`: generated wire format (`u64 address, u64 size, u64 offset, u64 handle, u64
/// flags`); the handle is gated by the generated half. A mapping keeps its allocation's memory
/// counted until it is unmapped, whether or not the client still holds the handle.
pub fn map(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut ahead = dec.clone();
    let address: u64 = ahead.get()?;
    let [_size, _offset, handle]: [u64; 3] = [ahead.get()?, ahead.get()?, ahead.get()?];
    generated_half(name, client, dec, out)?;
    if succeeded(out) {
        client.quota.mapped(address, handle);
    }
    Ok(())
}

/// `cuMemUnmap`: generated wire format (`u64 address, u64 size`).
pub fn unmap(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut ahead = dec.clone();
    let (address, size): (u64, u64) = (ahead.get()?, ahead.get()?);
    generated_half(name, client, dec, out)?;
    if succeeded(out) {
        client.quota.unmapped(address, size);
    }
    Ok(())
}

/// `cuMemGetInfo_v2`: generated wire format (`inout free, inout total`); with a quota, the
/// answer is the quota's ([`crate::dispatch::quota::MemoryQuota::report`]).
pub fn get_info(
    name: &str,
    client: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if !client.quota.is_set() {
        return generated_half(name, client, dec, out);
    }
    let mut ahead = dec.clone();
    let (want_free, want_total) = (out_pointer(&mut ahead)?, out_pointer(&mut ahead)?);
    generated_half(name, client, dec, out)?;
    let mut back = Decoder::new(out);
    let Ok(header) = ResponseHeader::read(&mut back) else {
        return Ok(());
    };
    if header.result != 0 {
        return Ok(());
    }
    let card_free: u64 = if want_free { back.get()? } else { u64::MAX };
    let card_total: u64 = if want_total { back.get()? } else { u64::MAX };
    let (free, total) = client.quota.report(card_free, card_total);
    let mut enc = ResponseHeader::start(out, 0);
    if want_free {
        enc.put(free);
    }
    if want_total {
        enc.put(total);
    }
    Ok(())
}
