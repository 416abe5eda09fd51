//! `CUDA_VISIBLE_DEVICES`, applied in the guest: the host worker sees every device its host
//! process sees (so one prewarmed worker suits every client), and the shim shows the guest only
//! the devices its own `CUDA_VISIBLE_DEVICES` names, in that order.
//!
//! Device handles stay the host's: `cuDeviceGet(&d, i)` answers the host handle of the i-th
//! visible device, which every other call takes unchanged.
#![allow(non_snake_case)]

use std::ffi::c_char;
use std::sync::OnceLock;

use cuda_headers::*;

use crate::forward::generated;

/// Host device handles visible to this process, in guest order.
static VISIBLE: OnceLock<Vec<CUdevice>> = OnceLock::new();

/// The canonical `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form of a device UUID.
pub fn uuid_string(uuid: &CUuuid) -> String {
    let b: Vec<u8> = uuid.bytes.iter().map(|&c| c as u8).collect();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Applies `CUDA_VISIBLE_DEVICES` (`spec`, `None` when unset) to the host's devices, given as
/// (handle, UUID string). CUDA's rules: entries are ordinals or `GPU-` UUID prefixes; the list
/// ends at the first entry that is invalid, unknown, ambiguous or repeated.
pub fn select(spec: Option<&str>, devices: &[(CUdevice, String)]) -> Vec<CUdevice> {
    let Some(spec) = spec else {
        return devices.iter().map(|(d, _)| *d).collect();
    };
    let mut chosen = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        let found = if let Ok(ordinal) = entry.parse::<usize>() {
            devices.get(ordinal).map(|(d, _)| *d)
        } else if entry.len() > 4 && entry.starts_with("GPU-") {
            let matches: Vec<_> = devices
                .iter()
                .filter(|(_, u)| u.starts_with(entry))
                .collect();
            match matches.as_slice() {
                [(d, _)] => Some(*d),
                _ => None,
            }
        } else {
            None
        };
        match found {
            Some(d) if !chosen.contains(&d) => chosen.push(d),
            _ => break,
        }
    }
    chosen
}

fn host_devices() -> CuResult<Vec<(CUdevice, String)>> {
    let mut count = 0;
    // SAFETY: out-pointer to a live local.
    unsafe { generated::cuDeviceGetCount(&mut count) }?;
    let mut devices = Vec::new();
    for ordinal in 0..count {
        let mut device: CUdevice = 0;
        let mut uuid = CUuuid { bytes: [0; 16] };
        // SAFETY: out-pointers to live locals.
        unsafe {
            generated::cuDeviceGet(&mut device, ordinal)?;
            generated::cuDeviceGetUuid_v2(&mut uuid, device)?;
        }
        devices.push((device, uuid_string(&uuid)));
    }
    Ok(devices)
}

fn visible() -> CuResult<&'static [CUdevice]> {
    if let Some(v) = VISIBLE.get() {
        return Ok(v);
    }
    let devices = host_devices()?;
    let spec = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    Ok(VISIBLE.get_or_init(|| select(spec.as_deref(), &devices)))
}

/// Forwards `cuInit`; with no visible device the answer is `CUDA_ERROR_NO_DEVICE`, as the real
/// driver gives.
///
/// # Safety
/// None.
///
/// # Errors
/// The host's result, or `CUDA_ERROR_NO_DEVICE`.
pub unsafe fn cuInit(Flags: u32) -> CuResult {
    // SAFETY: plain value.
    unsafe { generated::cuInit(Flags) }?;
    if visible()?.is_empty() {
        return Err(CuError::NO_DEVICE);
    }
    Ok(())
}

/// The number of visible devices.
///
/// # Safety
/// `count` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for NULL; the host's result.
pub unsafe fn cuDeviceGetCount(count: *mut i32) -> CuResult {
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let n = visible()?.len() as i32;
    // SAFETY: checked non-NULL.
    unsafe { count.write(n) };
    Ok(())
}

/// The host handle of the `ordinal`-th visible device.
///
/// # Safety
/// `device` is valid for one write.
///
/// # Errors
/// `CUDA_ERROR_INVALID_DEVICE` for an ordinal out of range.
pub unsafe fn cuDeviceGet(device: *mut CUdevice, ordinal: i32) -> CuResult {
    if device.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let handle = usize::try_from(ordinal)
        .ok()
        .and_then(|i| visible().ok()?.get(i).copied())
        .ok_or(CuError::INVALID_DEVICE)?;
    // SAFETY: checked non-NULL.
    unsafe { device.write(handle) };
    Ok(())
}

/// As the host answers, for visible devices only.
///
/// # Safety
/// As [`super::device::cuDeviceGetByPCIBusId`].
///
/// # Errors
/// `CUDA_ERROR_INVALID_DEVICE` for a device hidden from this process.
pub unsafe fn cuDeviceGetByPCIBusId(dev: *mut CUdevice, pciBusId: *const c_char) -> CuResult {
    let mut found: CUdevice = 0;
    // SAFETY: per the contract; `found` is a live local.
    unsafe { super::device::pci_lookup(&mut found, pciBusId) }?;
    if !visible()?.contains(&found) {
        return Err(CuError::INVALID_DEVICE);
    }
    if dev.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: checked non-NULL.
    unsafe { dev.write(found) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Vec<(CUdevice, String)> {
        vec![
            (0, "GPU-aaaa1111-0000-0000-0000-000000000000".into()),
            (1, "GPU-bbbb2222-0000-0000-0000-000000000000".into()),
            (2, "GPU-bbbb3333-0000-0000-0000-000000000000".into()),
        ]
    }

    #[test]
    fn follows_cuda_visible_devices_rules() {
        let d = devices();
        assert_eq!(select(None, &d), [0, 1, 2]);
        assert_eq!(select(Some(""), &d), Vec::<CUdevice>::new());
        assert_eq!(select(Some("2,0"), &d), [2, 0]);
        assert_eq!(
            select(Some(" 1 , 7, 0"), &d),
            [1],
            "stops at an out-of-range ordinal"
        );
        assert_eq!(select(Some("GPU-aaaa"), &d), [0]);
        assert_eq!(
            select(Some("GPU-bbbb,0"), &d),
            Vec::<CUdevice>::new(),
            "ambiguous prefix stops"
        );
        assert_eq!(select(Some("GPU-bbbb3,GPU-aaaa"), &d), [2, 0]);
        assert_eq!(select(Some("0,0,1"), &d), [0], "a repeat stops the list");
        assert_eq!(select(Some("MIG-1,0"), &d), Vec::<CUdevice>::new());
    }

    #[test]
    fn uuid_format() {
        let mut uuid = CUuuid { bytes: [0; 16] };
        for (i, b) in uuid.bytes.iter_mut().enumerate() {
            *b = i as c_char;
        }
        assert_eq!(
            uuid_string(&uuid),
            "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
