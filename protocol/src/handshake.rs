//! The first exchange on every channel: versions, identity, and the signature list.

use crate::codec::{DecodeError, Decoder, Encoder};

/// Bumped whenever a frame layout or special call changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// The guest's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the guest.
    pub protocol_version: u32,
    /// Fingerprint of the signature list the guest's marshalling was generated from.
    pub signature_fingerprint: u64,
    /// `size_of::<usize>()` of the guest.
    pub word_size: u8,
    /// Guest process id (meaningful to the host only on one kernel).
    pub pid: u32,
    /// Guest thread id.
    pub tid: u32,
}

/// The host's answer to a matching [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// [`PROTOCOL_VERSION`] of the host.
    pub protocol_version: u32,
    /// `cuDriverGetVersion` of the real driver.
    pub driver_version: i32,
    /// Host worker's process id, for logs.
    pub worker_pid: u32,
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Different protocol versions.
    #[error("protocol version {theirs} does not match ours ({ours})")]
    Protocol {
        /// Peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// Built from different signature lists.
    #[error("signature list {theirs:#018x} does not match ours ({ours:#018x}): rebuild shim and host from one tree")]
    Signatures {
        /// Peer's fingerprint.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
    /// Different word sizes.
    #[error("word size {theirs} does not match ours ({ours})")]
    WordSize {
        /// Peer's word size.
        theirs: u8,
        /// Ours.
        ours: u8,
    },
}

impl Hello {
    /// Encodes the greeting.
    pub fn encode(&self, enc: &mut Encoder<'_>) {
        enc.put(self.protocol_version);
        enc.put(self.signature_fingerprint);
        enc.put(self.word_size);
        enc.put(self.pid);
        enc.put(self.tid);
    }

    /// Decodes a greeting.
    ///
    /// # Errors
    ///
    /// A truncated frame.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            protocol_version: dec.get()?,
            signature_fingerprint: dec.get()?,
            word_size: dec.get()?,
            pid: dec.get()?,
            tid: dec.get()?,
        })
    }

    /// Checks the greeting against our own build.
    ///
    /// # Errors
    ///
    /// The first [`Mismatch`] found.
    pub fn check(&self, signature_fingerprint: u64) -> Result<(), Mismatch> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(Mismatch::Protocol {
                theirs: self.protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        let ours = std::mem::size_of::<usize>() as u8;
        if self.word_size != ours {
            return Err(Mismatch::WordSize {
                theirs: self.word_size,
                ours,
            });
        }
        if self.signature_fingerprint != signature_fingerprint {
            return Err(Mismatch::Signatures {
                theirs: self.signature_fingerprint,
                ours: signature_fingerprint,
            });
        }
        Ok(())
    }
}

impl Welcome {
    /// Encodes the answer.
    pub fn encode(&self, enc: &mut Encoder<'_>) {
        enc.put(self.protocol_version);
        enc.put(self.driver_version);
        enc.put(self.worker_pid);
    }

    /// Decodes the answer.
    ///
    /// # Errors
    ///
    /// A truncated frame.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            protocol_version: dec.get()?,
            driver_version: dec.get()?,
            worker_pid: dec.get()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            signature_fingerprint: 0xABCD,
            word_size: std::mem::size_of::<usize>() as u8,
            pid: 10,
            tid: 11,
        }
    }

    #[test]
    fn hello_round_trips_and_checks() {
        let mut buf = Vec::new();
        hello().encode(&mut Encoder::new(&mut buf));
        let mut dec = Decoder::new(&buf);
        let h = Hello::decode(&mut dec).unwrap();
        dec.finish().unwrap();
        assert_eq!(h, hello());
        h.check(0xABCD).unwrap();
        assert!(matches!(h.check(1), Err(Mismatch::Signatures { .. })));
        let old = Hello {
            protocol_version: 0,
            ..hello()
        };
        assert!(matches!(
            old.check(0xABCD),
            Err(Mismatch::Protocol { theirs: 0, .. })
        ));
    }
}
