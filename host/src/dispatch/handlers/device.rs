//! Device queries whose answers are strings.

use std::sync::Arc;

use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, MAX_NAME};
use crate::dispatch::ClientContext;

/// The real string query `cuDeviceGetName` or `cuDeviceGetPCIBusId`.
type StringQuery =
    unsafe extern "system" fn(*mut std::os::raw::c_char, i32, i32) -> cuda_headers::CUresult;

/// `i32 len, i32 dev` → result, `bytes text` (`len` bytes, NUL included), answered by `query`.
fn string_query(
    query: StringQuery,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len: i32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut buf = vec![0u8; (len.max(0) as usize).min(MAX_NAME)];
    // SAFETY: `buf` holds `buf.len()` writable bytes, which is what we tell the driver.
    let r = unsafe { query(buf.as_mut_ptr().cast(), buf.len() as i32, dev) };
    ResponseHeader::start(out, r.0).put_bytes(&buf);
    Ok(())
}

/// `cuDeviceGetName`: see [`string_query`].
pub fn get_name(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    string_query(real_or_unsupported!(cuDeviceGetName, out), dec, out)
}

/// `cuDeviceGetPCIBusId`: see [`string_query`].
pub fn get_pci_bus_id(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    string_query(real_or_unsupported!(cuDeviceGetPCIBusId, out), dec, out)
}

/// `cuDeviceGetByPCIBusId`: `bytes id` (no NUL) → result, `i32 dev`.
pub fn get_by_pci_bus_id(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let id = c_string(dec.get_bytes()?);
    dec.finish()?;
    let mut dev = 0i32;
    let f = real_or_unsupported!(cuDeviceGetByPCIBusId, out);
    // SAFETY: `id` is NUL-terminated and `dev` is a live local.
    let r = unsafe { f(&mut dev, id.as_ptr()) };
    ResponseHeader::start(out, r.0).put(dev);
    Ok(())
}

/// A NUL-terminated copy of guest bytes (cut at the first NUL the guest may have sent).
pub fn c_string(bytes: &[u8]) -> std::ffi::CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::ffi::CString::new(&bytes[..end]).expect("no interior NUL after the cut")
}
