//! The integrity check of export table `d4082055…` (slot 1: `(version, unix_seconds, &result)`).
//!
//! cudart asks the driver for a 16-byte value and compares it with its own computation over data
//! only the process and the driver share, so it must be computed in the guest, from exactly what
//! the application saw through the shim. Public reverse engineering (ZLUDA's "dark API" work)
//! describes the algorithm; stated in standard terms it is HMAC (RFC 2104) over MD2 (RFC 1319;
//! block and digest size 16) with a fixed 16-byte key, of this message:
//!
//! ```text
//! u32 driver_version   what cuDriverGetVersion answered
//! u32 version          the runtime's argument
//! u32 pid              getpid()
//! u32 thread           pthread_self(), low 32 bits
//! u64 cudart_table     address of the 6bd5fb6c… table handed out
//! u64 integrity_table  address of this table
//! u64 function         address of slot 1 (this function)
//! u64 unix_seconds     the runtime's argument
//! per device, in cuDeviceGet order:
//!   16 bytes uuid, i32 PCI domain, i32 PCI bus, i32 PCI device
//! ```
//!
//! all little-endian, and the digest is returned as two native-endian `u64`s. Runtimes passing a
//! `version` ending in 0 or 1 get fixed values instead (listed below). This was implemented from
//! that description and the RFCs, and checked here against the RFC 1319 test vectors; it has not
//! yet been compared with a real cudart on the GPU machine, which is the test that decides.

/// The HMAC key.
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// The fixed answers for `version % 10` of 0 and 1.
const FIXED: [[u64; 2]; 2] = [
    [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
    [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
];

/// MD2's substitution table, built from the digits of pi (RFC 1319, section 3.2).
const PI_SUBST: [u8; 256] = [
    41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, 98, 167, 5, 243, 192, 199,
    115, 140, 152, 147, 43, 217, 188, 76, 130, 202, 30, 155, 87, 60, 253, 212, 224, 22, 103, 66,
    111, 24, 138, 23, 229, 18, 190, 78, 196, 214, 218, 158, 222, 73, 160, 251, 245, 142, 187, 47,
    238, 122, 169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16, 137, 11, 34, 95, 33, 128, 127, 93,
    154, 90, 144, 50, 39, 53, 62, 204, 231, 191, 247, 151, 3, 255, 25, 48, 179, 72, 165, 181, 209,
    215, 94, 146, 42, 172, 86, 170, 198, 79, 184, 56, 210, 150, 164, 125, 182, 118, 252, 107, 226,
    156, 116, 4, 241, 69, 157, 112, 89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, 27,
    96, 37, 173, 174, 176, 185, 246, 28, 70, 97, 105, 52, 64, 126, 15, 85, 71, 163, 35, 221, 81,
    175, 58, 195, 92, 249, 206, 186, 197, 234, 38, 44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205,
    244, 65, 129, 77, 82, 106, 220, 55, 200, 108, 193, 171, 250, 36, 225, 123, 8, 12, 189, 177, 74,
    120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, 242, 239, 183, 14,
    102, 88, 208, 228, 166, 119, 114, 248, 235, 117, 75, 10, 49, 68, 80, 180, 143, 237, 31, 26,
    219, 153, 141, 51, 159, 17, 131, 20,
];

/// MD2 (RFC 1319), streaming.
#[derive(Debug, Clone)]
pub struct Md2 {
    state: [u8; 48],
    checksum: [u8; 16],
    buffer: [u8; 16],
    filled: usize,
}

impl Default for Md2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md2 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self {
            state: [0; 48],
            checksum: [0; 16],
            buffer: [0; 16],
            filled: 0,
        }
    }

    fn compress(&mut self, block: &[u8; 16]) {
        let mut last = self.checksum[15];
        for (c, &m) in self.checksum.iter_mut().zip(block) {
            *c ^= PI_SUBST[(m ^ last) as usize];
            last = *c;
        }
        self.transform(block);
    }

    fn transform(&mut self, block: &[u8; 16]) {
        for (i, &b) in block.iter().enumerate() {
            self.state[16 + i] = b;
            self.state[32 + i] = b ^ self.state[i];
        }
        let mut t = 0u8;
        for round in 0..18u8 {
            for x in self.state.iter_mut() {
                *x ^= PI_SUBST[t as usize];
                t = *x;
            }
            t = t.wrapping_add(round);
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (16 - self.filled).min(data.len());
            self.buffer[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 16 {
                let block = self.buffer;
                self.compress(&block);
                self.filled = 0;
            }
        }
    }

    /// The 16-byte digest.
    pub fn finish(mut self) -> [u8; 16] {
        let pad = (16 - self.filled) as u8;
        self.update(&vec![pad; pad as usize]);
        let checksum = self.checksum;
        self.transform(&checksum);
        let mut digest = [0; 16];
        digest.copy_from_slice(&self.state[..16]);
        digest
    }
}

/// HMAC-MD2 (RFC 2104 with a 16-byte block) of `message` under a 16-byte `key`.
pub fn hmac_md2(key: &[u8; 16], message: &[u8]) -> [u8; 16] {
    let mut inner = Md2::new();
    inner.update(&key.map(|k| k ^ 0x36));
    inner.update(message);
    let inner = inner.finish();
    let mut outer = Md2::new();
    outer.update(&key.map(|k| k ^ 0x5c));
    outer.update(&inner);
    outer.finish()
}

/// One device's part of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIds {
    /// `cuDeviceGetUuid_v2`.
    pub uuid: [u8; 16],
    /// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
    pub pci_domain: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
    pub pci_bus: i32,
    /// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
    pub pci_device: i32,
}

/// Everything the check covers besides the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// What `cuDriverGetVersion` answered.
    pub driver_version: u32,
    /// The runtime's version argument.
    pub version: u32,
    /// The process id.
    pub pid: u32,
    /// The calling thread's `pthread_self()`, low 32 bits.
    pub thread: u32,
    /// Address of the cudart interface table handed out.
    pub cudart_table: u64,
    /// Address of the integrity table handed out.
    pub integrity_table: u64,
    /// Address of the integrity-check function (slot 1).
    pub function: u64,
    /// The runtime's time argument.
    pub unix_seconds: u64,
}

/// The message the HMAC covers.
pub fn message(inputs: &Inputs, devices: &[DeviceIds]) -> Vec<u8> {
    let mut m = Vec::with_capacity(48 + 28 * devices.len());
    for v in [
        inputs.driver_version,
        inputs.version,
        inputs.pid,
        inputs.thread,
    ] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        inputs.cudart_table,
        inputs.integrity_table,
        inputs.function,
        inputs.unix_seconds,
    ] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    for d in devices {
        m.extend_from_slice(&d.uuid);
        for v in [d.pci_domain, d.pci_bus, d.pci_device] {
            m.extend_from_slice(&v.to_le_bytes());
        }
    }
    m
}

/// The check's result for these inputs.
pub fn compute(inputs: &Inputs, devices: &[DeviceIds]) -> [u64; 2] {
    match inputs.version % 10 {
        0 => return FIXED[0],
        1 => return FIXED[1],
        _ => {}
    }
    let digest = hmac_md2(&KEY, &message(inputs, devices));
    let (low, high) = digest.split_at(8);
    [
        u64::from_ne_bytes(low.try_into().expect("8 bytes")),
        u64::from_ne_bytes(high.try_into().expect("8 bytes")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn md2(data: &[u8]) -> String {
        let mut h = Md2::new();
        h.update(data);
        hex(&h.finish())
    }

    #[test]
    fn md2_matches_rfc_1319_test_suite() {
        assert_eq!(md2(b""), "8350e5a3e24c153df2275c9f80692773");
        assert_eq!(md2(b"a"), "32ec01ec4a6dac72c0ab96fb34c0b5d1");
        assert_eq!(md2(b"abc"), "da853b0d3f88d99b30283a69e6ded6bb");
        assert_eq!(md2(b"message digest"), "ab4f496bfb2a530b219ff33031fe06b0");
        assert_eq!(
            md2(b"abcdefghijklmnopqrstuvwxyz"),
            "4e8ddff3650292ab5a4108c3aa47940b"
        );
        assert_eq!(
            md2(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "d5976f79d83d3a0dc9806c3c66f3efd8"
        );
    }

    #[test]
    fn streaming_in_pieces_gives_the_same_digest() {
        let data: Vec<u8> = (0..=200u8).collect();
        let mut h = Md2::new();
        for chunk in data.chunks(7) {
            h.update(chunk);
        }
        assert_eq!(hex(&h.finish()), md2(&data));
    }

    fn inputs(version: u32) -> Inputs {
        Inputs {
            driver_version: 13000,
            version,
            pid: 4242,
            thread: 0xdead_beef,
            cudart_table: 0x7f00_0000_1000,
            integrity_table: 0x7f00_0000_2000,
            function: 0x7f00_0000_3000,
            unix_seconds: 1_800_000_000,
        }
    }

    #[test]
    fn message_layout_and_sensitivity() {
        let dev = DeviceIds {
            uuid: [7; 16],
            pci_domain: 0,
            pci_bus: 0x1b,
            pci_device: 0,
        };
        let m = message(&inputs(13002), &[dev, dev]);
        assert_eq!(m.len(), 48 + 2 * 28);
        assert_eq!(&m[0..4], &13000u32.to_le_bytes());
        assert_eq!(&m[16..24], &0x7f00_0000_1000u64.to_le_bytes());
        assert_eq!(&m[48..64], &[7; 16]);
        let a = compute(&inputs(13002), &[dev]);
        let mut other = dev;
        other.pci_bus += 1;
        assert_ne!(a, compute(&inputs(13002), &[other]), "PCI ids count");
        assert_ne!(a, compute(&inputs(13003), &[dev]), "version counts");
        assert_eq!(a, compute(&inputs(13002), &[dev]), "deterministic");
        assert_eq!(compute(&inputs(13000), &[dev]), FIXED[0]);
        assert_eq!(compute(&inputs(12091), &[dev]), FIXED[1]);
    }
}
