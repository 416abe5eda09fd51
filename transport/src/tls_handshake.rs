//! The TLS 1.3 handshake, run by rustls over a blocking TCP socket, after which the session's
//! traffic keys go to the record layer (`tls_record.rs`).
//!
//! rustls is fed one whole record at a time ([`RecordReader`]), so when the handshake ends it
//! holds no byte that came after it: the peer's first application record (the stream hello, sent
//! right behind the client's `Finished`) is still in the socket for the record layer to read.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use rustls::{ClientConnection, Connection, ServerConnection};
use sha2::{Digest as _, Sha256};

use crate::error::{GoneReason, TransportError};
use crate::stream_io::send_to_fd;
use crate::tls_config::{TlsClientConfig, TlsServerConfig};
use crate::tls_record::{SessionKeys, TlsStream};

/// Record header: type, legacy version, length.
const HEADER_LEN: usize = 5;

/// Reads from a socket without going past the end of the current TLS record.
struct RecordReader<'a> {
    socket: &'a TcpStream,
    header: [u8; HEADER_LEN],
    /// Header bytes already handed out (`HEADER_LEN` once the body is being read).
    header_given: usize,
    /// Body bytes of the current record still to hand out.
    body_left: usize,
}

impl Read for RecordReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.header_given == 0 {
            let mut got = 0;
            while got < HEADER_LEN {
                match self.socket.read(&mut self.header[got..]) {
                    Ok(0) if got == 0 => return Ok(0),
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
        }
        if self.header_given < HEADER_LEN {
            let n = buf.len().min(HEADER_LEN - self.header_given);
            buf[..n].copy_from_slice(&self.header[self.header_given..self.header_given + n]);
            self.header_given += n;
            if self.header_given == HEADER_LEN && self.body_left == 0 {
                self.header_given = 0;
            }
            return Ok(n);
        }
        let want = buf.len().min(self.body_left);
        let n = self.socket.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.body_left -= n;
        if self.body_left == 0 {
            self.header_given = 0;
        }
        Ok(n)
    }
}

/// Writes to a socket with `MSG_NOSIGNAL`.
struct NoSignal<'a>(&'a TcpStream);

impl Write for NoSignal<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_to_fd(self.0, buf).map(|()| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_error(context: &'static str) -> impl Fn(io::Error) -> TransportError {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TransportError::PeerGone(GoneReason::Disconnected),
        _ => TransportError::Io { context, source: e },
    }
}

/// Runs the handshake of `conn` to its end; returns the session's keys and the SHA-256
/// fingerprint of the peer's certificate.
fn drive(
    mut conn: Connection,
    socket: &TcpStream,
) -> Result<(SessionKeys, [u8; 32]), TransportError> {
    let mut records = RecordReader {
        socket,
        header: [0; HEADER_LEN],
        header_given: 0,
        body_left: 0,
    };
    let mut out = NoSignal(socket);
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut out)
                .map_err(io_error("tls handshake send"))?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn
            .read_tls(&mut records)
            .map_err(io_error("tls handshake receive"))?
            == 0
        {
            return Err(TransportError::PeerGone(GoneReason::Disconnected));
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (the alert rustls queued), then give up.
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    break;
                }
            }
            return Err(TransportError::Tls(e));
        }
    }
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .map_err(io_error("tls handshake send"))?;
    }
    let fingerprint: [u8; 32] = match conn.peer_certificates() {
        Some([leaf, ..]) => Sha256::digest(leaf.as_ref()).into(),
        _ => [0; 32],
    };
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(TransportError::Tls)?;
    let keys = SessionKeys::from_extracted(secrets)
        .map_err(|_| TransportError::BadHandshake("tls suite"))?;
    Ok((keys, fingerprint))
}

/// Runs the client side of the handshake over a connected socket.
///
/// # Errors
/// [`TransportError::Tls`] when the host's certificate does not verify or the host refuses this
/// client's; `PeerGone`/`Io` from the socket.
pub fn connect(socket: TcpStream, config: &TlsClientConfig) -> Result<TlsStream, TransportError> {
    let conn = ClientConnection::new(config.config.clone(), config.server_name.clone())
        .map_err(TransportError::Tls)?;
    let (keys, _) = drive(conn.into(), &socket)?;
    Ok(TlsStream::resume(socket, keys))
}

/// Runs the server side of the handshake over an accepted socket. Returns the session and the
/// SHA-256 fingerprint of the client's certificate (for logs).
///
/// # Errors
/// [`TransportError::Tls`] for a peer that does not speak TLS 1.3 with the one suite, or whose
/// certificate is missing or does not chain to the client CA; `PeerGone`/`Io` from the socket.
pub fn accept(
    socket: TcpStream,
    config: &TlsServerConfig,
) -> Result<(TlsStream, [u8; 32]), TransportError> {
    let conn = ServerConnection::new(config.0.clone()).map_err(TransportError::Tls)?;
    let (keys, fingerprint) = drive(conn.into(), &socket)?;
    Ok((TlsStream::resume(socket, keys), fingerprint))
}
