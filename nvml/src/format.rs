//! Pure conversions: UUID text, C string copies, and the PCI structs from a bus id.

use std::ffi::c_char;

use protocol::special::nvml::BusId;

use crate::types::{
    NvmlReturn, PciInfo, PciInfoV1, ERROR_INSUFFICIENT_SIZE, ERROR_INVALID_ARGUMENT,
    PCI_BUS_ID_BUFFER_SIZE, PCI_BUS_ID_BUFFER_V2_SIZE,
};

/// NVML's (and CUDA's) `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form of a device UUID.
pub fn uuid_string(bytes: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| {
        bytes[r]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Copies `text` and a NUL into `buf` of `len` bytes, NVML's way.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes of writes.
///
/// # Errors
/// `NVML_ERROR_INVALID_ARGUMENT` for NULL, `NVML_ERROR_INSUFFICIENT_SIZE` when `text` and its
/// NUL do not fit (nothing is written then).
pub unsafe fn copy_c_string(text: &str, buf: *mut c_char, len: u32) -> Result<(), NvmlReturn> {
    if buf.is_null() {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    if (len as usize) < text.len() + 1 {
        return Err(ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `buf` holds `len` ≥ text.len() + 1 bytes (caller's contract, checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// `text` in a fixed C buffer, NUL-terminated (truncated if needed; bus ids always fit).
fn fixed<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (o, b) in out.iter_mut().zip(text.bytes().take(N - 1)) {
        *o = b as c_char;
    }
    out
}

/// The bus id with an 8-digit domain (`00000000:17:00.0`), as NVML's `busId` and
/// `nvmlDeviceGetHandleByPciBusId` spell it.
pub fn bus_id_text(id: &BusId) -> String {
    format!(
        "{:08X}:{:02X}:{:02X}.{:X}",
        id.domain, id.bus, id.device, id.function
    )
}

/// The bus id with a 4-digit domain (`0000:17:00.0`), NVML's legacy spelling.
pub fn bus_id_legacy_text(id: &BusId) -> String {
    format!(
        "{:04X}:{:02X}:{:02X}.{:X}",
        id.domain, id.bus, id.device, id.function
    )
}

/// `nvmlPciInfo_t` (v2/v3 layout) for `id`; `ids` as in [`PciInfo::pci_device_id`], zero when
/// unknown.
pub fn pci_info(id: &BusId, ids: Option<(u32, u32)>) -> PciInfo {
    let (device_id, subsystem_id) = ids.unwrap_or((0, 0));
    PciInfo {
        bus_id_legacy: fixed::<PCI_BUS_ID_BUFFER_V2_SIZE>(&bus_id_legacy_text(id)),
        domain: id.domain,
        bus: u32::from(id.bus),
        device: u32::from(id.device),
        pci_device_id: device_id,
        pci_sub_system_id: subsystem_id,
        bus_id: fixed::<PCI_BUS_ID_BUFFER_SIZE>(&bus_id_text(id)),
    }
}

/// The original `nvmlPciInfo_t` layout for `id`.
pub fn pci_info_v1(id: &BusId, ids: Option<(u32, u32)>) -> PciInfoV1 {
    let v2 = pci_info(id, ids);
    PciInfoV1 {
        bus_id: v2.bus_id_legacy,
        domain: v2.domain,
        bus: v2.bus,
        device: v2.device,
        pci_device_id: v2.pci_device_id,
        pci_sub_system_id: v2.pci_sub_system_id,
        reserved: [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buf: &[c_char]) -> String {
        buf.iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect()
    }

    #[test]
    fn uuid_has_nvml_form() {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = 0x10 + i as u8;
        }
        bytes[15] = 0xff;
        assert_eq!(
            uuid_string(&bytes),
            "GPU-10111213-1415-1617-1819-1a1b1c1d1eff"
        );
    }

    #[test]
    fn copies_only_what_fits() {
        let mut buf = [1 as c_char; 6];
        // SAFETY: the buffer holds 6 bytes.
        let r = unsafe { copy_c_string("hello!", buf.as_mut_ptr(), 6) };
        assert_eq!(r, Err(ERROR_INSUFFICIENT_SIZE));
        assert_eq!(buf, [1; 6], "nothing written on failure");
        // SAFETY: as above.
        unsafe { copy_c_string("hello", buf.as_mut_ptr(), 6) }.unwrap();
        assert_eq!(text(&buf), "hello");
        assert_eq!(buf[5], 0);
        // SAFETY: NULL is refused before any write.
        let r = unsafe { copy_c_string("x", std::ptr::null_mut(), 6) };
        assert_eq!(r, Err(ERROR_INVALID_ARGUMENT));
    }

    #[test]
    fn pci_info_spells_both_bus_ids() {
        let id = BusId::parse("0000:c3:00.0").unwrap();
        let info = pci_info(&id, Some((0x2335_10de, 0x18be_10de)));
        assert_eq!(text(&info.bus_id), "00000000:C3:00.0");
        assert_eq!(text(&info.bus_id_legacy), "0000:C3:00.0");
        assert_eq!((info.domain, info.bus, info.device), (0, 0xc3, 0));
        assert_eq!(info.pci_device_id, 0x2335_10de);
        let v1 = pci_info_v1(&id, None);
        assert_eq!(text(&v1.bus_id), "0000:C3:00.0");
        assert_eq!((v1.pci_device_id, v1.reserved), (0, [0; 4]));
        assert_eq!(
            BusId::parse(&bus_id_text(&id)),
            Some(id),
            "NVML's spelling parses back"
        );
    }
}
