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

/// Request flag: the call is *posted* (fire-and-forget). The host runs it and sends no
/// response frame; the first failure among the posted calls since the last response is kept as
/// the channel's deferred error and answers the next non-posted call instead of running it
/// (see [`ResponseHeader::deferred`]). Honoured for driver-API functions only: special calls
/// (the handshake, layouts, …) are always answered.
pub const FLAG_NO_REPLY: u32 = 1 << 0;

/// Request flag: the header is followed by `u32 n, n × (u32 tid, u64 count)` ([`PostMark`]s):
/// the host runs this call only once the client's thread `tid` has executed `count` posted
/// calls, for each mark. A guest thread sends them when other threads of its process posted
/// calls it may depend on (a launch posted by one thread, then a synchronise by another).
pub const FLAG_AFTER_POSTS: u32 = 1 << 1;

/// Response flag: the call was not run; `result` is the deferred error of an earlier posted
/// call, described by the [`DeferredError`] that follows the header.
pub const FLAG_DEFERRED_ERROR: u32 = 1 << 0;

/// "Run after the first `count` posted calls of guest thread `tid`" (see [`FLAG_AFTER_POSTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostMark {
    /// The posting guest thread, as it named itself in its handshake.
    pub tid: u32,
    /// How many calls that thread had posted.
    pub count: u64,
}

impl PostMark {
    /// Encoded size in bytes.
    pub const SIZE: usize = 12;
}

/// The first failed posted call since the last response of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredError {
    /// Its result code.
    pub result: u32,
    /// Its call id.
    pub call: CallId,
    /// How many later posted calls failed too before this report.
    pub more: u32,
}

impl DeferredError {
    /// Encoded size in bytes.
    pub const SIZE: usize = 12;
}

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

    /// Whether the call is posted ([`FLAG_NO_REPLY`]).
    pub fn posted(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    /// Reads the [`PostMark`]s that follow the header when [`FLAG_AFTER_POSTS`] is set (none
    /// otherwise). The count is bounded by the bytes present, so a hostile count cannot
    /// force a large allocation.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when the frame ends inside the list.
    pub fn read_marks(&self, dec: &mut Decoder<'_>) -> Result<Vec<PostMark>, DecodeError> {
        if self.flags & FLAG_AFTER_POSTS == 0 {
            return Ok(Vec::new());
        }
        let n: u32 = dec.get()?;
        let mut marks = Vec::with_capacity((n as usize).min(dec.remaining() / PostMark::SIZE));
        for _ in 0..n {
            marks.push(PostMark {
                tid: dec.get()?,
                count: dec.get()?,
            });
        }
        Ok(marks)
    }

    /// Turns a complete request frame in `frame` into a posted one ([`FLAG_NO_REPLY`]).
    ///
    /// # Panics
    ///
    /// When `frame` is shorter than a header (a programming error: frames start with one).
    pub fn mark_posted(frame: &mut [u8]) {
        Self::set_flag(frame, FLAG_NO_REPLY);
    }

    /// Inserts `marks` after the header of a complete request frame and sets
    /// [`FLAG_AFTER_POSTS`]. Nothing changes when `marks` is empty.
    ///
    /// # Panics
    ///
    /// When `frame` is shorter than a header, or already carries marks.
    pub fn insert_marks(frame: &mut Vec<u8>, marks: &[PostMark]) {
        if marks.is_empty() {
            return;
        }
        let flags = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        assert_eq!(flags & FLAG_AFTER_POSTS, 0, "marks inserted twice");
        Self::set_flag(frame, FLAG_AFTER_POSTS);
        let mut list = Vec::with_capacity(4 + marks.len() * PostMark::SIZE);
        let mut enc = Encoder::new(&mut list);
        enc.put(marks.len() as u32);
        for mark in marks {
            enc.put(mark.tid);
            enc.put(mark.count);
        }
        frame.splice(Self::SIZE..Self::SIZE, list);
    }

    fn set_flag(frame: &mut [u8], flag: u32) {
        let flags = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes")) | flag;
        frame[4..8].copy_from_slice(&flags.to_le_bytes());
    }
}

/// The start of every response frame: the call's `CUresult` as a raw code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The call's result code, exactly as the real driver returned it (or as the host
    /// worker decided, for a call it refused).
    pub result: u32,
    /// `FLAG_*` bits: [`FLAG_DEFERRED_ERROR`] or 0.
    pub flags: u32,
    /// With [`FLAG_DEFERRED_ERROR`]: the failed posted call whose error `result` is.
    pub deferred: Option<DeferredError>,
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
        let result = dec.get()?;
        let flags: u32 = dec.get()?;
        let deferred = if flags & FLAG_DEFERRED_ERROR != 0 {
            Some(DeferredError {
                result: dec.get()?,
                call: CallId(dec.get()?),
                more: dec.get()?,
            })
        } else {
            None
        };
        Ok(Self {
            result,
            flags,
            deferred,
        })
    }

    /// Writes (into `buf`, cleared first) the whole response of a call that was not run
    /// because an earlier posted call failed: `result` = the deferred error.
    pub fn deferred(buf: &mut Vec<u8>, error: DeferredError) {
        buf.clear();
        let mut enc = Encoder::new(buf);
        enc.put(error.result);
        enc.put(FLAG_DEFERRED_ERROR);
        enc.put(error.result);
        enc.put(error.call.0);
        enc.put(error.more);
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
        assert_eq!(r.deferred, None);
    }

    #[test]
    fn posted_frames_carry_flags_and_marks() {
        let mut buf = Vec::new();
        RequestHeader::start(&mut buf, CallId(9), 0).put(0xABCDu32);
        RequestHeader::mark_posted(&mut buf);
        let marks = [
            PostMark { tid: 7, count: 3 },
            PostMark {
                tid: 8,
                count: u64::MAX,
            },
        ];
        RequestHeader::insert_marks(&mut buf, &marks);
        assert_eq!(buf.len(), RequestHeader::SIZE + 4 + 2 * PostMark::SIZE + 4);
        let mut dec = Decoder::new(&buf);
        let h = RequestHeader::read(&mut dec).unwrap();
        assert!(h.posted());
        assert_eq!(h.flags, FLAG_NO_REPLY | FLAG_AFTER_POSTS);
        assert_eq!(h.read_marks(&mut dec).unwrap(), marks);
        assert_eq!(dec.get::<u32>().unwrap(), 0xABCD);
        dec.finish().unwrap();

        // No marks: the frame is untouched and reads none.
        RequestHeader::start(&mut buf, CallId(9), 0).put(1u8);
        let before = buf.clone();
        RequestHeader::insert_marks(&mut buf, &[]);
        assert_eq!(buf, before);
        let mut dec = Decoder::new(&buf);
        let h = RequestHeader::read(&mut dec).unwrap();
        assert!(!h.posted());
        assert!(h.read_marks(&mut dec).unwrap().is_empty());
    }

    #[test]
    fn a_hostile_mark_count_is_bounded_by_the_frame() {
        let mut buf = Vec::new();
        RequestHeader::start(&mut buf, CallId(1), FLAG_AFTER_POSTS).put(u32::MAX);
        let mut dec = Decoder::new(&buf);
        let h = RequestHeader::read(&mut dec).unwrap();
        assert!(matches!(
            h.read_marks(&mut dec),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn deferred_errors_round_trip() {
        let mut buf = Vec::new();
        let error = DeferredError {
            result: 1,
            call: CallId(77),
            more: 2,
        };
        ResponseHeader::deferred(&mut buf, error);
        assert_eq!(buf.len(), ResponseHeader::SIZE + DeferredError::SIZE);
        let mut dec = Decoder::new(&buf);
        let r = ResponseHeader::read(&mut dec).unwrap();
        assert_eq!(r.result, 1);
        assert_eq!(r.flags, FLAG_DEFERRED_ERROR);
        assert_eq!(r.deferred, Some(error));
        dec.finish().unwrap();
        // A truncated deferred block is an error, not a guess.
        let mut dec = Decoder::new(&buf[..ResponseHeader::SIZE + 4]);
        assert!(ResponseHeader::read(&mut dec).is_err());
    }
}
