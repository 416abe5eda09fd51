//! The fixed headers at the start of every request and response frame.

use crate::codec::{DecodeError, Decoder, Encoder};

/// Which call a request frame carries.
///
/// Values below [`CallId::SPECIAL_BASE`] are indices into the sorted driver-API signature
/// list that shim-macros expands on both sides; the rest are the [`crate::special`] calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(pub u32);

impl CallId {
    /// First id that is not a driver-API function index.
    pub const SPECIAL_BASE: u32 = 0xFFFF_0000;

    /// Whether this id names a driver-API function.
    pub fn is_function(self) -> bool {
        self.0 < Self::SPECIAL_BASE
    }
}

/// Request flag: the guest will not wait for this call's reply (fire-and-forget). The
/// host runs the call, keeps the first failure as the channel's sticky error and reports
/// it on the next synchronous call. Reserved: no call sets it yet.
pub const FLAG_NO_REPLY: u32 = 1 << 0;

/// The start of every request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// The call.
    pub call: CallId,
    /// `FLAG_*` bits.
    pub flags: u32,
}

impl RequestHeader {
    /// Size of the encoded header in bytes.
    pub const SIZE: usize = 8;

    /// Starts a request frame in `buf` (cleared first).
    pub fn start(buf: &mut Vec<u8>, call: CallId, flags: u32) -> Encoder<'_> {
        buf.clear();
        let mut enc = Encoder::new(buf);
        enc.put(call.0);
        enc.put(flags);
        enc
    }

    /// Reads the header from the start of a request frame.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when the frame is shorter than the header.
    pub fn read(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            call: CallId(dec.get()?),
            flags: dec.get()?,
        })
    }
}

/// The start of every response frame: the call's `CUresult` as a raw code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The call's result code, exactly as the real driver returned it (or as the host
    /// worker decided, for a call it refused).
    pub result: u32,
    /// Reserved, zero.
    pub flags: u32,
}

impl ResponseHeader {
    /// Size of the encoded header in bytes.
    pub const SIZE: usize = 8;

    /// Starts a response frame in `buf` (cleared first).
    pub fn start(buf: &mut Vec<u8>, result: u32) -> Encoder<'_> {
        buf.clear();
        let mut enc = Encoder::new(buf);
        enc.put(result);
        enc.put(0u32);
        enc
    }

    /// Reads the header from the start of a response frame.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when the frame is shorter than the header.
    pub fn read(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            result: dec.get()?,
            flags: dec.get()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut buf = Vec::new();
        RequestHeader::start(&mut buf, CallId(42), FLAG_NO_REPLY).put(5u8);
        assert_eq!(buf.len(), RequestHeader::SIZE + 1);
        let mut dec = Decoder::new(&buf);
        let h = RequestHeader::read(&mut dec).unwrap();
        assert_eq!(
            h,
            RequestHeader {
                call: CallId(42),
                flags: FLAG_NO_REPLY
            }
        );
        assert!(h.call.is_function());
        ResponseHeader::start(&mut buf, 700);
        let r = ResponseHeader::read(&mut Decoder::new(&buf)).unwrap();
        assert_eq!(r.result, 700);
    }
}
