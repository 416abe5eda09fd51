//! Calls that are not driver-API functions: every special call id is defined here ([`ALL`]).

use crate::frame::CallId;

/// First call on every channel: [`crate::handshake::Hello`] → [`crate::handshake::Welcome`].
pub const HELLO: CallId = CallId(CallId::SPECIAL_BASE + 1);
/// Kernel parameter layout of a function handle: `u64 handle` → `u32 count`, then
/// `count` × (`u32 offset`, `u32 size`). The host answers from `cuFuncGetParamInfo`, or
/// `cuKernelGetParamInfo` for a `CUkernel`.
pub const PARAM_LAYOUT: CallId = CallId(CallId::SPECIAL_BASE + 2);
/// Host callbacks: the guest's callback thread reports the callback it just ran
/// (`u64 id`, 0 for none) and waits for the next one (`u64 id`, `u64 fn`, `u64 data`).
pub const CALLBACK_NEXT: CallId = CallId(CallId::SPECIAL_BASE + 3);
/// Orderly goodbye: the guest thread is ending; the host thread may exit.
pub const GOODBYE: CallId = CallId(CallId::SPECIAL_BASE + 4);
/// The two per-unit byte maps of export table `1734dc26…` slot 4, for the thread's current
/// context: no arguments → `bytes first`, `bytes second` (each a `u32` length, then the bytes).
/// Numbered apart from the others so that concurrent additions do not collide.
pub const UNIT_MAPS: CallId = CallId(CallId::SPECIAL_BASE + 8);
/// What the NVML facade (`libnvidia-ml.so.1`, crate `nvml`) needs from the host that the driver
/// API does not tell: [`nvml::FactsRequest`] → [`nvml::Facts`]. Answered by the host worker from
/// its own files (the real NVML, `/proc/driver/nvidia`, `/sys/bus/pci`), never from the guest.
pub const NVML_FACTS: CallId = CallId(CallId::SPECIAL_BASE + 9);

/// The memory of one device as the host's real NVML reports it (`nvmlDeviceGetMemoryInfo_v2`,
/// else `_v1` with `reserved` 0): `bytes bus_id` → result, [`nvml::MemoryFacts`]. NVML's total
/// includes memory the driver reserves, which `cuMemGetInfo` leaves out, so the facade asks for
/// this first. `CUDA_ERROR_NOT_SUPPORTED` when the host has no NVML, `CUDA_ERROR_NOT_FOUND` when
/// NVML does not know the bus id.
pub const NVML_MEMORY: CallId = CallId(CallId::SPECIAL_BASE + 10);

/// The guest's processes that use the GPU, with the device memory each holds, for the NVML
/// facade's `nvmlDeviceGetComputeRunningProcesses`: no arguments → result,
/// [`nvml::Processes`]. A region client is told every client of its region (the region is the
/// tenant boundary), a TCP client only itself; memory is what each client's allocations hold,
/// over all devices.
pub const NVML_PROCESSES: CallId = CallId(CallId::SPECIAL_BASE + 11);

/// A synchronous no-op: answered with success, or with the channel's deferred error (see
/// [`crate::frame::FLAG_NO_REPLY`]). The guest sends it to flush its posted calls, e.g. when a
/// thread ends with calls still posted.
pub const FLUSH: CallId = CallId(CallId::SPECIAL_BASE + 16);

/// DEVICEMAP host memory where the GPU cannot map guest memory (TCP): the worker allocates
/// host-pinned memory that stands in for the guest's buffer, a **mirror** ([`mirror`]):
/// [`mirror::AllocRequest`] → result, [`mirror::Allocated`]. Numbered apart from the others so
/// that concurrent additions do not collide.
pub const MIRROR_ALLOC: CallId = CallId(CallId::SPECIAL_BASE + 20);
/// Frees a mirror: [`mirror::FreeRequest`] → result.
pub const MIRROR_FREE: CallId = CallId(CallId::SPECIAL_BASE + 21);
/// Guest → host: bytes the guest changed in its mirrored buffers, [`mirror::Push`] → result.
pub const MIRROR_PUSH: CallId = CallId(CallId::SPECIAL_BASE + 22);
/// Host → guest: the whole content of mirrors, [`mirror::PullRequest`] → result,
/// [`mirror::Pulled`].
pub const MIRROR_PULL: CallId = CallId(CallId::SPECIAL_BASE + 23);

/// Every special call id, each defined above and nowhere else.
pub const ALL: [CallId; 13] = [
    HELLO,
    PARAM_LAYOUT,
    CALLBACK_NEXT,
    GOODBYE,
    UNIT_MAPS,
    NVML_FACTS,
    NVML_MEMORY,
    NVML_PROCESSES,
    FLUSH,
    MIRROR_ALLOC,
    MIRROR_FREE,
    MIRROR_PUSH,
    MIRROR_PULL,
];

/// The typed requests and answers of the mirror calls ([`MIRROR_ALLOC`], [`MIRROR_FREE`],
/// [`MIRROR_PUSH`], [`MIRROR_PULL`]).
///
/// Wire:
/// - alloc: `u64 len` → result, `u64 id`, `u64 device_ptr`;
/// - free: `u64 id` → result;
/// - push: `u32 n`, `n ×` (`u64 id`, `u64 offset`, `bytes data`) → result;
/// - pull: `u32 n`, `n × u64 id` → result, `n × bytes content` (each the mirror's whole length).
///
/// Ids are minted by the host, per client, and never reused; the host checks every id, offset
/// and length against its own table (the guest is not trusted).
pub mod mirror {
    use crate::codec::{DecodeError, Decoder, Encoder};

    /// Most bytes one client may hold in DEVICEMAP mirrors (`cuMemHostAlloc`, the sum of their
    /// lengths). The guest keeps a shadow copy of each and compares it before every request, so
    /// the cap keeps that cheap.
    pub const MAX_CLIENT_BYTES: u64 = 1 << 20;
    /// Most bytes one client may hold in managed mirrors (`cuMemAllocManaged` over TCP and
    /// `__managed__` variables from `cuLibraryGetManaged`), enforced by the host. The guest's
    /// own cap (`VGPU_MANAGED_MIRROR_MIB`, default [`DEFAULT_MANAGED_BYTES`]) may not pass it. Every
    /// sync pulls every mirror whole in one answer, which must stay well inside the transport's
    /// 2 GiB message limit.
    pub const MAX_MANAGED_BYTES: u64 = 1 << 30;
    /// The guest's default cap on managed mirrors (256 MiB).
    pub const DEFAULT_MANAGED_BYTES: u64 = 256 << 20;
    /// Most entries one push or pull may name.
    pub const MAX_ENTRIES: usize = 4096;

    fn count(dec: &mut Decoder<'_>) -> Result<usize, DecodeError> {
        let n = dec.get::<u32>()? as usize;
        if n > MAX_ENTRIES {
            return Err(DecodeError::BadTag {
                what: "mirror entry count (more than 4096)",
                tag: u8::MAX,
            });
        }
        Ok(n)
    }

    /// Asks for a mirror of `len` bytes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AllocRequest {
        /// Bytes, 1..=[`MAX_CLIENT_BYTES`].
        pub len: u64,
    }

    impl AllocRequest {
        /// Encodes the request.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.len);
        }

        /// Decodes the request.
        ///
        /// # Errors
        /// A truncated or overlong frame.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let len = dec.get()?;
            dec.finish()?;
            Ok(Self { len })
        }
    }

    /// The host's answer to [`AllocRequest`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Allocated {
        /// The mirror's id (never 0).
        pub id: u64,
        /// The device pointer of the worker's pinned memory (`cuMemHostGetDevicePointer`).
        pub device_ptr: u64,
    }

    impl Allocated {
        /// Encodes the answer (after the response header).
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.id);
            enc.put(self.device_ptr);
        }

        /// Decodes the answer.
        ///
        /// # Errors
        /// A truncated or overlong answer.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let answer = Self {
                id: dec.get()?,
                device_ptr: dec.get()?,
            };
            dec.finish()?;
            Ok(answer)
        }
    }

    /// Frees mirror `id`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FreeRequest {
        /// The mirror.
        pub id: u64,
    }

    impl FreeRequest {
        /// Encodes the request.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.id);
        }

        /// Decodes the request.
        ///
        /// # Errors
        /// A truncated or overlong frame.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let id = dec.get()?;
            dec.finish()?;
            Ok(Self { id })
        }
    }

    /// One run of changed bytes of a mirror.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Write<'a> {
        /// The mirror.
        pub id: u64,
        /// Offset of the first byte in the mirror.
        pub offset: u64,
        /// The bytes.
        pub data: &'a [u8],
    }

    /// Guest → host: changed bytes.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Push<'a> {
        /// At most [`MAX_ENTRIES`].
        pub writes: Vec<Write<'a>>,
    }

    impl<'a> Push<'a> {
        /// Encodes the request.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.writes.len() as u32);
            for w in &self.writes {
                enc.put(w.id);
                enc.put(w.offset);
                enc.put_bytes(w.data);
            }
        }

        /// Decodes the request (offsets and lengths are the host's to check).
        ///
        /// # Errors
        /// A truncated or overlong frame, or more than [`MAX_ENTRIES`] writes.
        pub fn decode(dec: &mut Decoder<'a>) -> Result<Self, DecodeError> {
            let n = count(dec)?;
            let mut writes = Vec::with_capacity(n);
            for _ in 0..n {
                writes.push(Write {
                    id: dec.get()?,
                    offset: dec.get()?,
                    data: dec.get_bytes()?,
                });
            }
            dec.finish()?;
            Ok(Self { writes })
        }
    }

    /// Asks for the content of mirrors.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct PullRequest {
        /// At most [`MAX_ENTRIES`].
        pub ids: Vec<u64>,
    }

    impl PullRequest {
        /// Encodes the request.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.ids.len() as u32);
            for id in &self.ids {
                enc.put(*id);
            }
        }

        /// Decodes the request.
        ///
        /// # Errors
        /// A truncated or overlong frame, or more than [`MAX_ENTRIES`] ids.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let n = count(dec)?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(dec.get()?);
            }
            dec.finish()?;
            Ok(Self { ids })
        }
    }

    /// The host's answer to a [`PullRequest`]: one content per id, in order.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Pulled<'a> {
        /// Each mirror's bytes.
        pub contents: Vec<&'a [u8]>,
    }

    impl<'a> Pulled<'a> {
        /// Encodes the answer (after the response header).
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            for c in &self.contents {
                enc.put_bytes(c);
            }
        }

        /// Decodes an answer for `n` ids.
        ///
        /// # Errors
        /// A truncated or overlong answer.
        pub fn decode(dec: &mut Decoder<'a>, n: usize) -> Result<Self, DecodeError> {
            let mut contents = Vec::with_capacity(n.min(MAX_ENTRIES));
            for _ in 0..n {
                contents.push(dec.get_bytes()?);
            }
            dec.finish()?;
            Ok(Self { contents })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_message_round_trips() {
            let mut buf = Vec::new();
            let push = Push {
                writes: vec![
                    Write {
                        id: 3,
                        offset: 8,
                        data: b"abcd",
                    },
                    Write {
                        id: 4,
                        offset: 0,
                        data: b"",
                    },
                ],
            };
            push.encode(&mut Encoder::new(&mut buf));
            assert_eq!(Push::decode(&mut Decoder::new(&buf)).unwrap(), push);
            assert!(Push::decode(&mut Decoder::new(&buf[..buf.len() - 1])).is_err());

            let mut buf = Vec::new();
            let pull = PullRequest { ids: vec![1, 9] };
            pull.encode(&mut Encoder::new(&mut buf));
            assert_eq!(PullRequest::decode(&mut Decoder::new(&buf)).unwrap(), pull);

            let mut buf = Vec::new();
            let pulled = Pulled {
                contents: vec![b"xy", b"z"],
            };
            pulled.encode(&mut Encoder::new(&mut buf));
            assert_eq!(Pulled::decode(&mut Decoder::new(&buf), 2).unwrap(), pulled);
            assert!(Pulled::decode(&mut Decoder::new(&buf), 3).is_err());
            assert!(Pulled::decode(&mut Decoder::new(&buf), 1).is_err());

            let mut buf = Vec::new();
            let a = Allocated {
                id: 1,
                device_ptr: 0x7f00,
            };
            a.encode(&mut Encoder::new(&mut buf));
            assert_eq!(Allocated::decode(&mut Decoder::new(&buf)).unwrap(), a);
        }

        #[test]
        fn hostile_counts_are_refused() {
            let mut buf = Vec::new();
            Encoder::new(&mut buf).put(u32::MAX);
            assert!(Push::decode(&mut Decoder::new(&buf)).is_err());
            assert!(PullRequest::decode(&mut Decoder::new(&buf)).is_err());
        }
    }
}

/// The typed request and answer of [`NVML_FACTS`].
///
/// Wire: request `u32 n`, `n × bytes bus_id` (the driver's `cuDeviceGetPCIBusId` text of each
/// device the guest sees) → `u8 present` [`u8 source`, `bytes version`], then `n ×`
/// (`u8 present` [`u32 pci_device_id`, `u32 pci_subsystem_id`], `u8 present` [`u32 minor`]).
pub mod nvml {
    use crate::codec::{DecodeError, Decoder, Encoder};

    /// Most devices one request may name; the host answers a longer list as malformed.
    pub const MAX_DEVICES: usize = 64;
    /// Longest bus id text the host looks at; a longer one gets no facts.
    pub const MAX_BUS_ID_LEN: usize = 64;
    /// Longest driver version text (NVML's `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`, with NUL).
    pub const MAX_VERSION_LEN: usize = 79;

    /// The guest's question.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FactsRequest {
        /// PCI bus ids of the devices, in the guest's order.
        pub bus_ids: Vec<String>,
    }

    /// Where the host read the driver version.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    pub enum VersionSource {
        /// The host's real NVML (`nvmlSystemGetDriverVersion`).
        Nvml = 1,
        /// `/proc/driver/nvidia/version`.
        ProcFile = 2,
    }

    /// The kernel driver's version, e.g. `580.159.04`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DriverVersion {
        /// Where it came from.
        pub source: VersionSource,
        /// The text, at most [`MAX_VERSION_LEN`] bytes.
        pub text: String,
    }

    /// PCI identity of one device; `None` where the host could not read it.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct PciFacts {
        /// `(device id << 16) | vendor id`, and `(subsystem device << 16) | subsystem vendor`.
        pub ids: Option<(u32, u32)>,
        /// The `/dev/nvidiaN` minor number.
        pub minor: Option<u32>,
    }

    /// The host's answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Facts {
        /// `None` when the host has neither a real NVML nor `/proc/driver/nvidia/version`.
        pub driver_version: Option<DriverVersion>,
        /// One entry per requested bus id, in order.
        pub devices: Vec<PciFacts>,
    }

    /// A PCI address as the bus id texts of this call spell it: `[domain:]bus:device[.function]`,
    /// hexadecimal, any case (`cuDeviceGetPCIBusId` gives `0000:17:00.0`, NVML `00000000:17:00.0`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BusId {
        /// PCI domain (segment).
        pub domain: u32,
        /// Bus, 0..=255.
        pub bus: u8,
        /// Device on the bus, 0..=31.
        pub device: u8,
        /// Function, 0..=7.
        pub function: u8,
    }

    impl BusId {
        /// Parses a bus id text; `None` for anything else (surrounding blanks and a trailing
        /// NUL are ignored).
        pub fn parse(text: &str) -> Option<Self> {
            let text = text.trim().trim_end_matches('\0');
            let (rest, function) = match text.rsplit_once('.') {
                Some((rest, f)) => (rest, u8::from_str_radix(f, 16).ok()?),
                None => (text, 0),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let (domain, bus, device) = match parts.as_slice() {
                [d, b, v] => (*d, *b, *v),
                [b, v] => ("0", *b, *v),
                _ => return None,
            };
            let hex_ok = |s: &str, max: usize| {
                !s.is_empty() && s.len() <= max && s.bytes().all(|c| c.is_ascii_hexdigit())
            };
            if !(hex_ok(domain, 8) && hex_ok(bus, 2) && hex_ok(device, 2)) {
                return None;
            }
            let id = Self {
                domain: u32::from_str_radix(domain, 16).ok()?,
                bus: u8::from_str_radix(bus, 16).ok()?,
                device: u8::from_str_radix(device, 16).ok()?,
                function,
            };
            (id.device < 32 && id.function < 8).then_some(id)
        }

        /// The kernel's spelling (`/sys/bus/pci/devices/<this>`): `0000:17:00.0`.
        pub fn sysfs_name(&self) -> String {
            format!(
                "{:04x}:{:02x}:{:02x}.{:x}",
                self.domain, self.bus, self.device, self.function
            )
        }
    }

    impl FactsRequest {
        /// Encodes the request.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.bus_ids.len() as u32);
            for id in &self.bus_ids {
                enc.put_bytes(id.as_bytes());
            }
        }

        /// Decodes a request. The count is only trusted as far as the frame holds entries;
        /// text that is not UTF-8 is kept lossily (the host parses it and finds no device).
        ///
        /// # Errors
        /// A truncated frame, or more than [`MAX_DEVICES`] entries.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let n = dec.get::<u32>()? as usize;
            if n > MAX_DEVICES {
                return Err(DecodeError::BadTag {
                    what: "NVML device count (more than 64)",
                    tag: u8::MAX,
                });
            }
            let mut bus_ids = Vec::with_capacity(n);
            for _ in 0..n {
                bus_ids.push(String::from_utf8_lossy(dec.get_bytes()?).into_owned());
            }
            Ok(Self { bus_ids })
        }
    }

    impl Facts {
        /// Encodes the answer (after the response header).
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put_flag(self.driver_version.is_some());
            if let Some(version) = &self.driver_version {
                enc.put(version.source as u8);
                enc.put_bytes(version.text.as_bytes());
            }
            for device in &self.devices {
                enc.put_flag(device.ids.is_some());
                if let Some((device_id, subsystem_id)) = device.ids {
                    enc.put(device_id);
                    enc.put(subsystem_id);
                }
                enc.put_flag(device.minor.is_some());
                if let Some(minor) = device.minor {
                    enc.put(minor);
                }
            }
        }

        /// Decodes an answer for `n` requested devices.
        ///
        /// # Errors
        /// A truncated frame, an unknown source tag, a version that is too long or not UTF-8.
        pub fn decode(dec: &mut Decoder<'_>, n: usize) -> Result<Self, DecodeError> {
            let driver_version = if dec.get_flag("driver version present")? {
                let source = match dec.get::<u8>()? {
                    1 => VersionSource::Nvml,
                    2 => VersionSource::ProcFile,
                    tag => {
                        return Err(DecodeError::BadTag {
                            what: "driver version source",
                            tag,
                        })
                    }
                };
                let bytes = dec.get_bytes()?;
                let text = std::str::from_utf8(bytes)
                    .ok()
                    .filter(|t| t.len() <= MAX_VERSION_LEN && !t.contains('\0'))
                    .ok_or(DecodeError::BadTag {
                        what: "driver version text",
                        tag: bytes.len().min(255) as u8,
                    })?;
                Some(DriverVersion {
                    source,
                    text: text.to_owned(),
                })
            } else {
                None
            };
            let mut devices = Vec::with_capacity(n.min(MAX_DEVICES));
            for _ in 0..n {
                let ids = if dec.get_flag("PCI ids present")? {
                    Some((dec.get()?, dec.get()?))
                } else {
                    None
                };
                let minor = if dec.get_flag("minor present")? {
                    Some(dec.get()?)
                } else {
                    None
                };
                devices.push(PciFacts { ids, minor });
            }
            dec.finish()?;
            Ok(Self {
                driver_version,
                devices,
            })
        }
    }

    /// The answer of [`super::NVML_MEMORY`]: bytes, as NVML counts them.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct MemoryFacts {
        /// Installed memory.
        pub total: u64,
        /// Reserved by the driver (0 when only NVML's v1 call answered).
        pub reserved: u64,
        /// Free.
        pub free: u64,
        /// Used (allocated, plus reserved in v1's count).
        pub used: u64,
    }

    impl MemoryFacts {
        /// Encodes the answer (after the response header): four `u64`.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            enc.put(self.total);
            enc.put(self.reserved);
            enc.put(self.free);
            enc.put(self.used);
        }

        /// Decodes the answer.
        ///
        /// # Errors
        /// A truncated answer.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            Ok(Self {
                total: dec.get()?,
                reserved: dec.get()?,
                free: dec.get()?,
                used: dec.get()?,
            })
        }
    }

    /// Most processes one [`Processes`] answer holds.
    pub const MAX_PROCESSES: usize = 4096;

    /// One guest process and the device memory its allocations hold.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ProcessMemory {
        /// The guest process id.
        pub pid: u32,
        /// Bytes.
        pub used_bytes: u64,
    }

    /// The answer of [`super::NVML_PROCESSES`]: `u32 n`, `n × (u32 pid, u64 used_bytes)`.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Processes {
        /// At most [`MAX_PROCESSES`], ordered by pid.
        pub processes: Vec<ProcessMemory>,
    }

    impl Processes {
        /// Encodes the answer (after the response header); entries past [`MAX_PROCESSES`]
        /// are left out.
        pub fn encode(&self, enc: &mut Encoder<'_>) {
            let n = self.processes.len().min(MAX_PROCESSES);
            enc.put(n as u32);
            for p in &self.processes[..n] {
                enc.put(p.pid);
                enc.put(p.used_bytes);
            }
        }

        /// Decodes the answer.
        ///
        /// # Errors
        /// A truncated answer, or more than [`MAX_PROCESSES`] entries.
        pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let n = dec.get::<u32>()? as usize;
            if n > MAX_PROCESSES {
                return Err(DecodeError::BadTag {
                    what: "NVML process count (more than 4096)",
                    tag: u8::MAX,
                });
            }
            let mut processes = Vec::with_capacity(n);
            for _ in 0..n {
                processes.push(ProcessMemory {
                    pid: dec.get()?,
                    used_bytes: dec.get()?,
                });
            }
            Ok(Self { processes })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn processes_round_trip_and_refuse_a_hostile_count() {
            let p = Processes {
                processes: vec![
                    ProcessMemory {
                        pid: 7,
                        used_bytes: 5 << 20,
                    },
                    ProcessMemory {
                        pid: 9,
                        used_bytes: 0,
                    },
                ],
            };
            let mut buf = Vec::new();
            p.encode(&mut Encoder::new(&mut buf));
            assert_eq!(buf.len(), 4 + 2 * 12);
            let mut dec = Decoder::new(&buf);
            assert_eq!(Processes::decode(&mut dec).unwrap(), p);
            dec.finish().unwrap();
            assert!(Processes::decode(&mut Decoder::new(&buf[..20])).is_err());
            let hostile = (MAX_PROCESSES as u32 + 1).to_le_bytes();
            assert!(Processes::decode(&mut Decoder::new(&hostile)).is_err());
        }

        #[test]
        fn memory_facts_round_trip_and_refuse_truncation() {
            let m = MemoryFacts {
                total: 150_754_820_096,
                reserved: 644_939_776,
                free: 149_000_000_000,
                used: 1_109_880_320,
            };
            let mut buf = Vec::new();
            m.encode(&mut Encoder::new(&mut buf));
            assert_eq!(buf.len(), 32);
            assert_eq!(MemoryFacts::decode(&mut Decoder::new(&buf)).unwrap(), m);
            assert!(MemoryFacts::decode(&mut Decoder::new(&buf[..31])).is_err());
        }

        #[test]
        fn request_and_facts_round_trip() {
            let request = FactsRequest {
                bus_ids: vec!["0000:17:00.0".into(), "00000001:c3:00.0".into()],
            };
            let mut buf = Vec::new();
            request.encode(&mut Encoder::new(&mut buf));
            let mut dec = Decoder::new(&buf);
            assert_eq!(FactsRequest::decode(&mut dec).unwrap(), request);
            dec.finish().unwrap();

            let facts = Facts {
                driver_version: Some(DriverVersion {
                    source: VersionSource::ProcFile,
                    text: "580.159.04".into(),
                }),
                devices: vec![
                    PciFacts {
                        ids: Some((0x233510de, 0x18a610de)),
                        minor: Some(3),
                    },
                    PciFacts::default(),
                ],
            };
            let mut buf = Vec::new();
            facts.encode(&mut Encoder::new(&mut buf));
            assert_eq!(Facts::decode(&mut Decoder::new(&buf), 2).unwrap(), facts);
            assert!(
                Facts::decode(&mut Decoder::new(&buf), 3).is_err(),
                "a missing entry is truncation"
            );
            assert!(
                Facts::decode(&mut Decoder::new(&buf), 1).is_err(),
                "an extra entry is trailing"
            );
        }

        #[test]
        fn bus_ids_parse_in_every_spelling() {
            let id = BusId {
                domain: 0,
                bus: 0x17,
                device: 0,
                function: 0,
            };
            assert_eq!(BusId::parse("0000:17:00.0"), Some(id));
            assert_eq!(BusId::parse("00000000:17:00.0"), Some(id));
            assert_eq!(BusId::parse("17:00.0\0"), Some(id));
            assert_eq!(BusId::parse("0000:17:00"), Some(id));
            assert_eq!(
                BusId::parse("00000001:C3:1F.7").map(|b| b.sysfs_name()),
                Some("0001:c3:1f.7".to_owned())
            );
            for bad in [
                "",
                "17",
                "0000:17:20.0",
                "0000:17:00.8",
                "0000:117:00.0",
                "../../x:0:0",
            ] {
                assert_eq!(BusId::parse(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn hostile_input_is_refused() {
            let mut buf = Vec::new();
            Encoder::new(&mut buf).put(u32::MAX);
            assert!(FactsRequest::decode(&mut Decoder::new(&buf)).is_err());

            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf);
            enc.put_flag(true);
            enc.put(1u8);
            enc.put_bytes(&[b'5'; 200]);
            assert!(Facts::decode(&mut Decoder::new(&buf), 0).is_err());

            let mut buf = Vec::new();
            let mut enc = Encoder::new(&mut buf);
            enc.put_flag(true);
            enc.put(9u8);
            assert!(Facts::decode(&mut Decoder::new(&buf), 0).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn special_ids_are_distinct_and_never_function_indices() {
        let mut ids: Vec<u32> = super::ALL.iter().map(|id| id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), super::ALL.len());
        assert!(super::ALL.iter().all(|id| !id.is_function()));
    }
}
