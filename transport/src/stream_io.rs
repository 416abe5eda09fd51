//! The byte streams the socket transport speaks over: a plain socket (TCP, Unix) or a TLS
//! session on a TCP socket ([`crate::TlsStream`]).

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// A connected byte stream: what the stream framing (`stream.rs`) reads and writes.
pub trait StreamIo: Read + AsRawFd {
    /// Writes all of `data`; a dead peer gives an error, never `SIGPIPE`.
    ///
    /// # Errors
    /// The socket's error.
    fn send_all(&mut self, data: &[u8]) -> io::Result<()>;

    /// Whether received bytes already wait in this process, so that waiting on the socket for
    /// more would wait for the wrong thing.
    fn has_buffered(&self) -> bool {
        false
    }
}

impl StreamIo for TcpStream {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        send_to_fd(self, data)
    }
}

impl StreamIo for UnixStream {
    fn send_all(&mut self, data: &[u8]) -> io::Result<()> {
        send_to_fd(self, data)
    }
}

/// Writes all of `data` to the socket `fd` with `MSG_NOSIGNAL`, so a dead peer gives an
/// error, never `SIGPIPE` (the shim runs in programs that keep its default action).
///
/// # Errors
/// The `send` error (`EPIPE`, `ECONNRESET`, …).
pub(crate) fn send_to_fd(fd: &impl AsRawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is a valid readable slice for the duration of the call.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}
