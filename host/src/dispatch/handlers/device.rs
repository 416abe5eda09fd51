//! Device queries whose answers are strings.

use std::sync::Arc;

use protocol::{DecodeError, Decoder, ResponseHeader};

use super::{real_or_unsupported, MAX_NAME};
use crate::dispatch::ClientContext;

/// `cuDeviceGetName`: `i32 len, i32 dev` → result, `bytes name` (`len` bytes, NUL included).
pub fn get_name(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len: i32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut buf = vec![0u8; (len.max(0) as usize).min(MAX_NAME)];
    let f = real_or_unsupported!(cuDeviceGetName, out);
    // SAFETY: `buf` holds `buf.len()` writable bytes, which is what we tell the driver.
    let r = unsafe { f(buf.as_mut_ptr().cast(), buf.len() as i32, dev) };
    ResponseHeader::start(out, r.0).put_bytes(&buf);
    Ok(())
}

/// `cuDeviceGetPCIBusId`: as [`get_name`].
pub fn get_pci_bus_id(
    _: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let len: i32 = dec.get()?;
    let dev: i32 = dec.get()?;
    dec.finish()?;
    let mut buf = vec![0u8; (len.max(0) as usize).min(MAX_NAME)];
    let f = real_or_unsupported!(cuDeviceGetPCIBusId, out);
    // SAFETY: as in `get_name`.
    let r = unsafe { f(buf.as_mut_ptr().cast(), buf.len() as i32, dev) };
    ResponseHeader::start(out, r.0).put_bytes(&buf);
    Ok(())
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
