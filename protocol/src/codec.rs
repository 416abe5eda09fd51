//! Little-endian, length-checked encoding of call arguments.
//!
//! Values are written as their in-memory bytes (guest and host are both x86-64 or both
//! aarch64; the handshake refuses a peer of another word size or byte order). Byte
//! buffers carry a `u64` length first. Every read is bounds-checked: a truncated or
//! hostile frame gives a [`DecodeError`], never an out-of-bounds access.

use std::mem::{size_of, MaybeUninit};

/// Types for which every bit pattern of the right size is a valid value.
///
/// # Safety
///
/// Implement only for types with no padding-sensitive invariants, no references and no
/// niche: integers, floats, arrays of them.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive integer or float accepts every bit pattern of its size.
        unsafe impl Pod for $t {}
    )* };
}
pod!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64);
// SAFETY: an array of Pod values is Pod.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A frame that ended early or carried an impossible length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes were left than the next field needs.
    #[error("frame truncated: needed {needed} bytes at offset {offset}, {left} left")]
    Truncated {
        /// Offset of the field in the frame.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the frame.
        left: usize,
    },
    /// Bytes were left over after the last field.
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    /// A tag byte held a value the protocol does not define.
    #[error("invalid tag {tag} for {what}")]
    BadTag {
        /// What the tag selects.
        what: &'static str,
        /// The value found.
        tag: u8,
    },
}

/// Appends encoded values to a buffer.
pub struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Encodes into `buf`, after whatever it holds already.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    /// Appends a plain value.
    pub fn put<T: Pod>(&mut self, value: T) {
        // SAFETY: T is Pod, so all of its bytes are initialised plain data.
        unsafe { self.put_raw(&value) }
    }

    /// Appends the bytes of any `Copy` value.
    ///
    /// # Safety
    ///
    /// `T` must have no uninitialised bytes the reader depends on and must be valid for
    /// every bit pattern on the reading side (plain C structs, handles, integers). The
    /// generated marshalling only uses this for types its classifier proved plain.
    pub unsafe fn put_raw<T: Copy>(&mut self, value: &T) {
        let size = size_of::<T>();
        let ptr = (value as *const T).cast::<u8>();
        // SAFETY: `value` is a live reference to `size` bytes; padding bytes of C structs
        // are copied as they are, which the caller accepted above.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
        self.buf.extend_from_slice(bytes);
    }

    /// Appends an optional value: a presence byte, then the value if present.
    ///
    /// # Safety
    ///
    /// As for [`Encoder::put_raw`].
    pub unsafe fn put_opt_raw<T: Copy>(&mut self, value: Option<&T>) {
        match value {
            None => self.buf.push(0),
            Some(v) => {
                self.buf.push(1);
                // SAFETY: forwarded from the caller's contract.
                unsafe { self.put_raw(v) }
            }
        }
    }

    /// Appends a presence flag alone (an out-parameter the caller did or did not pass).
    pub fn put_flag(&mut self, present: bool) {
        self.buf.push(u8::from(present));
    }

    /// Appends a length-prefixed byte buffer.
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.put(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// Appends bytes as they are, with no length: a fragment encoded separately.
    pub fn put_raw_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a length-prefixed UTF-8 or C string (without its NUL).
    pub fn put_str(&mut self, s: &[u8]) {
        self.put_bytes(s);
    }
}

/// Reads encoded values back, checking every length. A clone reads on from the same place
/// independently (to look ahead at arguments without consuming them).
#[derive(Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, needed: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.remaining();
        if needed > left {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed,
                left,
            });
        }
        let out = &self.buf[self.pos..self.pos + needed];
        self.pos += needed;
        Ok(out)
    }

    /// Reads a plain value.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when the frame is too short.
    pub fn get<T: Pod>(&mut self) -> Result<T, DecodeError> {
        // SAFETY: T is Pod, so every bit pattern is a valid T.
        unsafe { self.get_raw() }
    }

    /// Reads the bytes of any `Copy` value.
    ///
    /// # Safety
    ///
    /// Every bit pattern of `size_of::<T>()` bytes must be a valid `T` (see
    /// [`Encoder::put_raw`]).
    ///
    /// # Errors
    ///
    /// [`DecodeError::Truncated`] when the frame is too short.
    pub unsafe fn get_raw<T: Copy>(&mut self) -> Result<T, DecodeError> {
        let bytes = self.take(size_of::<T>())?;
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: `bytes` has exactly size_of::<T>() bytes and `out` has room for them;
        // the regions cannot overlap (one is on the stack, one in the frame).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
        }
        // SAFETY: all bytes were written above and the caller guarantees any bit pattern
        // is a valid T.
        Ok(unsafe { out.assume_init() })
    }

    /// Reads an optional value written by [`Encoder::put_opt_raw`].
    ///
    /// # Safety
    ///
    /// As for [`Decoder::get_raw`].
    ///
    /// # Errors
    ///
    /// Truncation, or a presence byte other than 0 or 1.
    pub unsafe fn get_opt_raw<T: Copy>(&mut self) -> Result<Option<T>, DecodeError> {
        if self.get_flag("option")? {
            // SAFETY: forwarded from the caller's contract.
            Ok(Some(unsafe { self.get_raw()? }))
        } else {
            Ok(None)
        }
    }

    /// Reads a presence flag written by [`Encoder::put_flag`].
    ///
    /// # Errors
    ///
    /// Truncation, or a byte other than 0 or 1.
    pub fn get_flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.get::<u8>()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { what, tag }),
        }
    }

    /// Reads a length-prefixed byte buffer, borrowed from the frame.
    ///
    /// # Errors
    ///
    /// Truncation, including a length larger than what is left.
    pub fn get_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.get::<u64>()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len)
    }

    /// Checks that the whole frame was consumed.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Trailing`] when bytes are left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Mixed {
        a: u8,
        b: u64,
        c: [u32; 3],
    }

    #[test]
    fn values_round_trip() {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf);
        enc.put(7u32);
        enc.put(-3i64);
        enc.put_bytes(b"hello");
        enc.put_flag(false);
        let m = Mixed {
            a: 1,
            b: 2,
            c: [3, 4, 5],
        };
        // SAFETY: Mixed is a plain repr(C) struct of integers.
        unsafe { enc.put_opt_raw(Some(&m)) };
        let mut dec = Decoder::new(&buf);
        assert_eq!(dec.get::<u32>().unwrap(), 7);
        assert_eq!(dec.get::<i64>().unwrap(), -3);
        assert_eq!(dec.get_bytes().unwrap(), b"hello");
        assert!(!dec.get_flag("t").unwrap());
        // SAFETY: as above.
        assert_eq!(unsafe { dec.get_opt_raw::<Mixed>() }.unwrap(), Some(m));
        dec.finish().unwrap();
    }

    #[test]
    fn truncation_and_trailing_are_errors() {
        let mut dec = Decoder::new(&[1, 2, 3]);
        assert!(matches!(
            dec.get::<u32>(),
            Err(DecodeError::Truncated {
                needed: 4,
                left: 3,
                ..
            })
        ));
        assert_eq!(dec.finish(), Err(DecodeError::Trailing(3)));
        let mut buf = Vec::new();
        Encoder::new(&mut buf).put(u64::MAX);
        assert!(Decoder::new(&buf).get_bytes().is_err());
        assert!(matches!(
            Decoder::new(&[9]).get_flag("x"),
            Err(DecodeError::BadTag { tag: 9, .. })
        ));
    }

    proptest! {
        #[test]
        fn hostile_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut dec = Decoder::new(&bytes);
            let _ = dec.get_bytes();
            let _ = dec.get::<u64>();
            let _ = dec.get_flag("f");
            // SAFETY: u128-sized arrays of bytes accept any bit pattern.
            let _ = unsafe { dec.get_opt_raw::<[u8; 16]>() };
        }
    }
}
