//! Does the host answer? A stand-in until the transport offers a handshake.
//!
//! The transport has no handshake message yet, so this reads the region header only: magic,
//! layout version and the "initialised" word the host sets when it has laid the region out. The
//! offsets mirror `transport/src/layout.rs` (`Header`) at the time of writing; when the transport
//! exposes an open-and-check (or a ping), [`probe_region`] is the one function to replace.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// `"VGPUSHM1"` little-endian, as `transport::layout::MAGIC`.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"VGPUSHM1");
/// Layout version this tool knows (`transport::layout::LAYOUT_VERSION`).
pub const REGION_LAYOUT_VERSION: u32 = 3;
/// `Header::initialised` value meaning "ready".
pub const INIT_READY: u32 = 2;

/// What the region header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionProbe {
    /// No file at the path.
    Missing,
    /// The file cannot be opened or read (the text says why).
    Unreadable(String),
    /// Shorter than the header.
    TooSmall(u64),
    /// Another magic: not a vgpu region, or the host never started.
    BadMagic(u64),
    /// A layout version this tool does not know.
    OtherLayout(u32),
    /// Header present but the host has not finished initialising it.
    NotInitialised(u32),
    /// Magic, layout and initialised flag are valid.
    Ready,
}

impl RegionProbe {
    /// Whether the header is valid and initialised.
    pub fn is_ready(&self) -> bool {
        *self == Self::Ready
    }
}

impl std::fmt::Display for RegionProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => write!(f, "region file does not exist"),
            Self::Unreadable(e) => write!(f, "region cannot be read: {e}"),
            Self::TooSmall(n) => write!(f, "region is only {n} bytes, smaller than its header"),
            Self::BadMagic(m) => write!(
                f,
                "region magic is {m:#018x}, not a vgpu region (host not started?)"
            ),
            Self::OtherLayout(v) => write!(
                f,
                "region layout version {v}, this vgpuctl knows {REGION_LAYOUT_VERSION}"
            ),
            Self::NotInitialised(v) => write!(
                f,
                "region header not initialised (flag {v}); host still starting or gone"
            ),
            Self::Ready => write!(f, "region header valid and initialised by the host"),
        }
    }
}

/// Reads the region header at `path` (a real path on this machine).
pub fn probe_region(path: &Path) -> RegionProbe {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RegionProbe::Missing,
        Err(e) => return RegionProbe::Unreadable(e.to_string()),
    };
    let mut h = [0u8; 28];
    let mut got = 0;
    while got < h.len() {
        match f.read(&mut h[got..]) {
            Ok(0) => return RegionProbe::TooSmall(got as u64),
            Ok(n) => got += n,
            Err(e) => return RegionProbe::Unreadable(e.to_string()),
        }
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let magic = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    if magic != REGION_MAGIC {
        return RegionProbe::BadMagic(magic);
    }
    let layout = word(8);
    if layout != REGION_LAYOUT_VERSION {
        return RegionProbe::OtherLayout(layout);
    }
    match word(24) {
        INIT_READY => RegionProbe::Ready,
        v => RegionProbe::NotInitialised(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vgpuctl reads the region header by hand (it does not link the transport); the constants it
    /// reads it with must follow the transport's layout.
    #[test]
    fn header_constants_follow_the_transport() {
        assert_eq!(REGION_LAYOUT_VERSION, transport::LAYOUT_VERSION);
        assert_eq!(REGION_MAGIC, transport::MAGIC);
    }
}
