//! TLS 1.3 record protection (RFC 8446 §5) over a TCP socket, once a rustls handshake
//! (`tls_handshake.rs`) has agreed the session's traffic keys.
//!
//! Why not rustls's own connection for the data: the host's supervisor runs the handshake and
//! then passes the socket to the client's worker process (`SCM_RIGHTS`), and a rustls
//! connection cannot cross a process. What does cross is its traffic keys and sequence numbers
//! ([`SessionKeys`], from rustls's `dangerous_extract_secrets`), with which the worker goes on
//! protecting records exactly as rustls would: the sealing and opening (nonce from IV and
//! sequence number, inner content type, padding) is rustls's own record encrypter and decrypter
//! for the session's cipher suite; this module only frames records (5-byte headers) and counts
//! sequence numbers. Both ends use it after their handshakes, so the stream is ordinary TLS 1.3
//! application data on the wire (`tests::a_rustls_peer_reads_and_writes_these_records`).
//!
//! The only suite is TLS_CHACHA20_POLY1305_SHA256 (`tls_config.rs`): with it no number of
//! records calls for a key update (AES-GCM's confidentiality limit would, after 2^24 records,
//! and a key update needs the traffic secret, which does not travel). Any record after the
//! handshake that is not application data ends the session: a `close_notify` alert as an orderly
//! end of stream, another alert as `PermissionDenied` naming it (a peer's refusal, e.g. of this
//! end's certificate), a post-handshake handshake message (a key update, a session ticket) as
//! `InvalidData`.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage, Tls13AeadAlgorithm,
};
use rustls::{ConnectionTrafficSecrets, ContentType, ExtractedSecrets, ProtocolVersion};

use crate::stream_io::{send_to_fd, StreamIo};

/// Largest plaintext of one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Record header: type, legacy version, length.
const HEADER_LEN: usize = 5;
/// Largest ciphertext of one record (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Bytes of received ciphertext buffered at most: several full records, so bulk transfers read
/// many records per system call.
const RECEIVE_BUFFER: usize = 8 * (HEADER_LEN + MAX_CIPHERTEXT);
/// Sealed records gathered before one `send` (a bulk write sends in steps of this size).
const SEND_BATCH: usize = 16 * (HEADER_LEN + MAX_CIPHERTEXT);
/// Bytes of a ChaCha20-Poly1305 key.
const KEY_LEN: usize = 32;
/// Bytes of a TLS 1.3 per-record IV.
const IV_LEN: usize = 12;
/// A `close_notify` alert: level warning (1), description close_notify (0).
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// The key, IV and next sequence number of one direction of a session.
#[derive(Clone)]
struct DirectionKeys {
    key: [u8; KEY_LEN],
    iv: [u8; IV_LEN],
    seq: u64,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.iv);
    }
}

/// Overwrites `bytes` with zeros in a way the compiler keeps.
fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: `byte` is a valid, aligned, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
}

/// The traffic keys of one TLS session in both directions and where each direction's sequence
/// stands: what a process needs to take a session over from the one that ran the handshake.
/// The bytes never appear in `Debug` output; they are wiped when dropped.
#[derive(Clone)]
pub struct SessionKeys {
    tx: DirectionKeys,
    rx: DirectionKeys,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionKeys(tx seq {}, rx seq {})",
            self.tx.seq, self.rx.seq
        )
    }
}

/// Why session keys were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeysError {
    /// The session agreed a suite other than ChaCha20-Poly1305.
    #[error("the session's cipher suite is not TLS_CHACHA20_POLY1305_SHA256")]
    Suite,
    /// An encoded text that is not `SEQ:KEY:IV SEQ:KEY:IV` in hex.
    #[error("malformed session keys")]
    Malformed,
}

impl SessionKeys {
    /// Takes the keys rustls extracted after a handshake.
    ///
    /// # Errors
    /// [`SessionKeysError::Suite`] for any suite but ChaCha20-Poly1305.
    pub(crate) fn from_extracted(secrets: ExtractedSecrets) -> Result<Self, SessionKeysError> {
        let direction = |(seq, secrets): (u64, ConnectionTrafficSecrets)| match secrets {
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                let mut keys = DirectionKeys {
                    key: [0; KEY_LEN],
                    iv: [0; IV_LEN],
                    seq,
                };
                if key.as_ref().len() != KEY_LEN || iv.as_ref().len() != IV_LEN {
                    return Err(SessionKeysError::Suite);
                }
                keys.key.copy_from_slice(key.as_ref());
                keys.iv.copy_from_slice(iv.as_ref());
                Ok(keys)
            }
            _ => Err(SessionKeysError::Suite),
        };
        Ok(SessionKeys {
            tx: direction(secrets.tx)?,
            rx: direction(secrets.rx)?,
        })
    }

    /// The keys as one line of text (`SEQ:KEY:IV SEQ:KEY:IV`, transmit direction first, hex), to
    /// pass to another process over a private channel.
    pub fn encode(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let one = |d: &DirectionKeys| format!("{}:{}:{}", d.seq, hex(&d.key), hex(&d.iv));
        format!("{} {}", one(&self.tx), one(&self.rx))
    }

    /// Parses [`SessionKeys::encode`]'s text.
    ///
    /// # Errors
    /// [`SessionKeysError::Malformed`] for anything else.
    pub fn decode(text: &str) -> Result<Self, SessionKeysError> {
        fn unhex<const N: usize>(text: &str) -> Result<[u8; N], SessionKeysError> {
            let mut out = [0u8; N];
            if text.len() != 2 * N || !text.is_ascii() {
                return Err(SessionKeysError::Malformed);
            }
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                    .map_err(|_| SessionKeysError::Malformed)?;
            }
            Ok(out)
        }
        let direction = |text: &str| -> Result<DirectionKeys, SessionKeysError> {
            let mut parts = text.split(':');
            let (Some(seq), Some(key), Some(iv), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(SessionKeysError::Malformed);
            };
            Ok(DirectionKeys {
                seq: seq.parse().map_err(|_| SessionKeysError::Malformed)?,
                key: unhex(key)?,
                iv: unhex(iv)?,
            })
        };
        let mut words = text.split(' ');
        let (Some(tx), Some(rx), None) = (words.next(), words.next(), words.next()) else {
            return Err(SessionKeysError::Malformed);
        };
        Ok(SessionKeys {
            tx: direction(tx)?,
            rx: direction(rx)?,
        })
    }
}

/// The one suite's record protection algorithm.
fn aead() -> &'static dyn Tls13AeadAlgorithm {
    match rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256 {
        rustls::SupportedCipherSuite::Tls13(suite) => suite.aead_alg,
        #[allow(unreachable_patterns)] // `Tls12` exists only with rustls's `tls12` feature.
        _ => unreachable!("TLS13_CHACHA20_POLY1305_SHA256 is a TLS 1.3 suite"),
    }
}

/// A TLS 1.3 session's application-data stream over a TCP socket.
pub struct TlsStream {
    socket: TcpStream,
    /// The session's keys, with the sequence numbers kept current, so that the session can be
    /// handed on ([`TlsStream::into_parts`]).
    keys: SessionKeys,
    encrypter: Box<dyn MessageEncrypter>,
    decrypter: Box<dyn MessageDecrypter>,
    /// Received bytes: `received[plain.0..plain.1]` is opened plaintext not yet read,
    /// `received[start..end]` ciphertext not yet opened.
    received: Vec<u8>,
    plain: (usize, usize),
    start: usize,
    end: usize,
    /// Set once the peer ended the session (`close_notify` or end of stream at a record edge).
    ended: bool,
    outgoing: Vec<u8>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Continues a session over `socket` with `keys` (from [`TlsStream::into_parts`] of the
    /// process that ran the handshake, or from the handshake itself).
    pub fn resume(socket: TcpStream, keys: SessionKeys) -> Self {
        let aead = aead();
        let encrypter = aead.encrypter(AeadKey::from(keys.tx.key), Iv::from(keys.tx.iv));
        let decrypter = aead.decrypter(AeadKey::from(keys.rx.key), Iv::from(keys.rx.iv));
        TlsStream {
            socket,
            keys,
            encrypter,
            decrypter,
            received: vec![0; RECEIVE_BUFFER],
            plain: (0, 0),
            start: 0,
            end: 0,
            ended: false,
            outgoing: Vec::new(),
        }
    }

    /// The socket and the session's keys as they stand, to hand the session to another
    /// process, which continues with [`TlsStream::resume`].
    ///
    /// # Errors
    /// `InvalidData` when received bytes wait unread here: they would be lost.
    pub fn into_parts(self) -> io::Result<(TcpStream, SessionKeys)> {
        if self.has_buffered() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer sent data before it was answered",
            ));
        }
        Ok((self.socket, self.keys))
    }

    /// Seals and sends a record of another content type (tests of what a peer may send).
    #[cfg(test)]
    pub(crate) fn send_typed(&mut self, typ: ContentType, data: &[u8]) -> io::Result<()> {
        self.seal_and_send(typ, data)
    }

    /// The socket (e.g. to set timeouts).
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Seals `data` into records of content type `typ` and sends them.
    fn seal_and_send(&mut self, typ: ContentType, data: &[u8]) -> io::Result<()> {
        self.outgoing.clear();
        for chunk in data.chunks(MAX_PLAINTEXT) {
            let seq = self.keys.tx.seq;
            self.keys.tx.seq = seq
                .checked_add(1)
                .ok_or_else(|| invalid("the session's send sequence is exhausted"))?;
            let message = OutboundPlainMessage {
                typ,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(chunk),
            };
            let sealed = self
                .encrypter
                .encrypt(message, seq)
                .map_err(|_| invalid("a record could not be sealed"))?;
            self.outgoing.extend_from_slice(&sealed.encode());
            if self.outgoing.len() >= SEND_BATCH {
                send_to_fd(&self.socket, &self.outgoing)?;
                self.outgoing.clear();
            }
        }
        if !self.outgoing.is_empty() {
            send_to_fd(&self.socket, &self.outgoing)?;
        }
        Ok(())
    }

    /// Makes sure at least `want` ciphertext bytes are buffered; false at an end of stream with
    /// nothing buffered.
    fn receive_at_least(&mut self, want: usize) -> io::Result<bool> {
        debug_assert!(want <= self.received.len());
        if self.start + want > self.received.len() {
            self.received.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < want {
            let n = match self.socket.read(&mut self.received[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if self.end == self.start {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection inside a record",
                ));
            }
            self.end += n;
        }
        Ok(true)
    }

    /// Opens the next record into `plain`; false once the peer ended the session.
    fn open_next(&mut self) -> io::Result<bool> {
        if self.ended || !self.receive_at_least(HEADER_LEN)? {
            self.ended = true;
            return Ok(false);
        }
        let header = &self.received[self.start..self.start + HEADER_LEN];
        if header[0] != u8::from(ContentType::ApplicationData) || header[1..3] != [3, 3] {
            return Err(invalid("a record that is not TLS 1.3 application data"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(invalid("a record longer than TLS allows"));
        }
        if !self.receive_at_least(HEADER_LEN + len)? {
            return Err(invalid("the stream ended inside a record"));
        }
        let seq = self.keys.rx.seq;
        self.keys.rx.seq = seq
            .checked_add(1)
            .ok_or_else(|| invalid("the session's receive sequence is exhausted"))?;
        let body_at = self.start + HEADER_LEN;
        let body = &mut self.received[body_at..body_at + len];
        let body_ptr = body.as_ptr();
        let sealed =
            InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, body);
        let opened = self
            .decrypter
            .decrypt(sealed, seq)
            .map_err(|_| invalid("a record failed authentication"))?;
        // TLS 1.3 records open in place: the plaintext starts where the ciphertext did.
        if opened.payload.as_ptr() != body_ptr {
            return Err(invalid("a record opened out of place"));
        }
        let (typ, plain_len) = (opened.typ, opened.payload.len());
        let closes = typ == ContentType::Alert && opened.payload == CLOSE_NOTIFY;
        let alert = opened.payload.get(1).copied();
        self.start += HEADER_LEN + len;
        match typ {
            ContentType::ApplicationData => {
                self.plain = (body_at, body_at + plain_len);
                Ok(true)
            }
            ContentType::Alert if closes => {
                self.ended = true;
                Ok(false)
            }
            // An alert is the peer's refusal (e.g. of this end's certificate): reported with
            // its name, as an error other than a plain disconnection.
            ContentType::Alert => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the peer ended the TLS session with alert {:?}",
                    rustls::AlertDescription::from(alert.unwrap_or(0))
                ),
            )),
            _ => Err(invalid(
                "a handshake message after the handshake (key update or ticket; not supported)",
            )),
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.plain.0 == self.plain.1 {
            if !self.open_next()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.plain.1 - self.plain.0);
        buf[..n].copy_from_slice(&self.received[self.plain.0..self.plain.0 + n]);
        self.plain.0 += n;
        Ok(n)
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl StreamIo for TlsStream {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.seal_and_send(ContentType::ApplicationData, data)
    }

    fn has_buffered(&self) -> bool {
        self.plain.0 < self.plain.1 || self.start < self.end
    }
}
