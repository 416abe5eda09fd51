//! The supervisor → worker link for socket connections: a Unix `SOCK_SEQPACKET` socket pair.
//! A pipe (the worker's stdin, `worker_link.rs`) cannot carry descriptors; this link carries
//! each accepted connection's socket with `SCM_RIGHTS`, after the supervisor has completed the
//! stream handshake.
//!
//! One message per connection: the text `stream ID PID TID PEER CREDENTIAL` (the client id the
//! supervisor admitted the connection as, the pid and tid the peer said, its address, and the
//! new client's credential or `-`, `worker_link::credential_field`), followed for a TLS
//! connection by ` tls KEYS` (the session's traffic keys and sequence numbers,
//! `transport::SessionKeys::encode`, with which the worker continues the session), and exactly
//! one descriptor. The worker sends the admission (`StreamHello::admit`, or a refusal past its
//! connection limit), inside the TLS session when there is one. Sequenced packets keep the text
//! and its descriptor together; the pair is private to the supervisor and that worker. End of
//! file means the supervisor is gone.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use transport::{ClientIdentity, Credential, SessionKeys};

use crate::worker_link::{credential_field, parse_credential};

/// Longest message text (a full-width record with an IPv6 peer, a credential and TLS keys is
/// under 360 bytes).
const MAX_TEXT: usize = 512;
/// Descriptors a received message may carry before it is refused (only one is sent; the
/// room is there so that extra ones are received, closed and reported, never leaked).
const MAX_FDS: usize = 4;

/// One accepted, handshaken connection as the worker learns of it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client id it was admitted as, and the pid and tid the peer said.
    pub client: ClientIdentity,
    /// A new client's credential, to send back with the admission.
    pub credential: Option<Credential>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The TLS session to continue (`None` in clear text).
    pub session: Option<SessionKeys>,
}

/// What went wrong receiving a connection.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link socket failed.
    #[error("connection link: {0}")]
    Io(#[from] io::Error),
    /// A message without exactly one descriptor, or truncated.
    #[error("connection link: message with {0} descriptor(s) or truncated; dropped")]
    Descriptors(usize),
    /// A message whose text is not a connection record.
    #[error("connection link: bad record {0:?}; dropped")]
    BadRecord(String),
}

impl Connection {
    /// The record text.
    pub fn to_text(&self) -> String {
        let tls = match &self.session {
            Some(keys) => format!(" tls {}", keys.encode()),
            None => String::new(),
        };
        format!(
            "stream {} {} {} {} {}{tls}",
            self.client.client_id,
            self.client.pid,
            self.client.tid,
            self.peer,
            credential_field(self.credential.as_ref())
        )
    }

    /// Parses a record text.
    ///
    /// # Errors
    ///
    /// [`LinkError::BadRecord`] for anything but `stream ID PID TID PEER CREDENTIAL [tls KEYS]`.
    pub fn parse(text: &str) -> Result<Self, LinkError> {
        // The record's text is not shown: it may hold session keys.
        let bad = || LinkError::BadRecord(text.split(" tls ").next().unwrap_or("").to_owned());
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let (id, pid, tid, peer, credential, session) = match words[..] {
            ["stream", id, pid, tid, peer, credential] => (id, pid, tid, peer, credential, None),
            ["stream", id, pid, tid, peer, credential, "tls", tx, rx] => {
                let keys = SessionKeys::decode(&format!("{tx} {rx}")).map_err(|_| bad())?;
                (id, pid, tid, peer, credential, Some(keys))
            }
            _ => return Err(bad()),
        };
        Ok(Connection {
            credential: parse_credential(credential).map_err(|()| bad())?,
            client: ClientIdentity {
                client_id: id.parse().map_err(|_| bad())?,
                pid: pid.parse().map_err(|_| bad())?,
                tid: tid.parse().map_err(|_| bad())?,
            },
            peer: peer.parse().map_err(|_| bad())?,
            session,
        })
    }
}

/// A connected pair of link sockets, both close-on-exec: (supervisor's end, worker's end).
///
/// # Errors
///
/// The `socketpair` error.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two descriptors for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one connection and its socket. The socket stays open here too; the caller closes its
/// copy once sent.
///
/// # Errors
///
/// The `sendmsg` error (`EPIPE`/`ECONNREFUSED` once the worker is gone).
pub fn send(
    link: BorrowedFd<'_>,
    connection: &Connection,
    socket: BorrowedFd<'_>,
) -> io::Result<()> {
    let text = connection.to_text();
    let mut iov = libc::iovec {
        iov_base: text.as_ptr() as *mut libc::c_void,
        iov_len: text.len(),
    };
    let fd: libc::c_int = socket.as_raw_fd();
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE is pure arithmetic on a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, which has room for one header (CMSG_SPACE for one
    // int, checked above) and is 8-byte aligned, so CMSG_FIRSTHDR is non-null and in bounds;
    // the header and its data are written inside `control`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    loop {
        // SAFETY: `msg` and everything it points at (`iov` over `text`, `control`) live
        // across the call; the descriptors are open.
        let n = unsafe { libc::sendmsg(link.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives the next connection and its socket (close-on-exec); `Ok(None)` at end of file.
///
/// # Errors
///
/// [`LinkError::Io`] when the link fails (stop reading); [`LinkError::Descriptors`] or
/// [`LinkError::BadRecord`] for one bad message, whose descriptors are closed (read on).
pub fn recv(link: BorrowedFd<'_>) -> Result<Option<(Connection, OwnedFd)>, LinkError> {
    let mut text = [0u8; MAX_TEXT];
    let mut iov = libc::iovec {
        iov_base: text.as_mut_ptr().cast(),
        iov_len: text.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE is pure arithmetic on a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: an all-zero msghdr is a valid empty message header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `text`) and `control`, which live across the
        // call and have the lengths given.
        let n = unsafe { libc::recvmsg(link.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(LinkError::Io(e));
        }
    };
    let fds = received_fds(&msg);
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    if truncated || fds.len() != 1 {
        return Err(LinkError::Descriptors(fds.len()));
    }
    let text = std::str::from_utf8(&text[..n])
        .map_err(|_| LinkError::BadRecord(String::from_utf8_lossy(&text[..n]).into_owned()))?;
    let connection = Connection::parse(text)?;
    let fd = fds.into_iter().next().ok_or(LinkError::Descriptors(0))?;
    Ok(Some((connection, fd)))
}

/// Takes ownership of every descriptor in a received message's `SCM_RIGHTS` headers.
fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg: its control buffer holds `msg_controllen` valid
    // bytes of headers, which CMSG_FIRSTHDR/CMSG_NXTHDR walk within bounds. Each SCM_RIGHTS
    // header's data holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors the kernel just installed
    // in this process, owned by nobody else; they are read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn connection() -> Connection {
        Connection {
            client: ClientIdentity {
                client_id: u64::MAX,
                pid: 4_194_304,
                tid: 17,
            },
            credential: Some(Credential::from_bytes([0xa5; transport::CREDENTIAL_LEN])),
            peer: "[2001:db8::1]:65535".parse().expect("addr"),
            session: None,
        }
    }

    /// The fields a record carries, comparable (session keys compare by their text).
    fn fields(c: &Connection) -> (ClientIdentity, SocketAddr, Option<String>) {
        (
            c.client,
            c.peer,
            c.session.as_ref().map(SessionKeys::encode),
        )
    }

    #[test]
    fn a_socket_travels_with_its_record() {
        let (sup, worker) = pair().expect("pair");
        let (mut ours, theirs) = UnixStream::pair().expect("stream pair");
        send(sup.as_fd(), &connection(), theirs.as_fd()).expect("send");
        drop(theirs);
        let (got, fd) = recv(worker.as_fd()).expect("recv").expect("a message");
        assert_eq!(fields(&got), fields(&connection()));
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut passed = UnixStream::from(fd);
        ours.write_all(b"over").expect("write");
        let mut buf = [0u8; 4];
        passed.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"over");
        drop(sup);
        assert!(recv(worker.as_fd()).expect("eof").is_none());
    }

    #[test]
    fn messages_without_one_descriptor_or_a_record_are_dropped() {
        let (sup, worker) = pair().expect("pair");
        let mut plain = UnixStream::from(sup.try_clone().expect("dup"));
        plain
            .write_all(connection().to_text().as_bytes())
            .expect("write");
        assert!(matches!(
            recv(worker.as_fd()),
            Err(LinkError::Descriptors(0))
        ));
        let (_a, b) = UnixStream::pair().expect("stream pair");
        let mut bad = connection();
        bad.peer = "127.0.0.1:1".parse().expect("addr");
        let text_ok = bad.to_text();
        send(sup.as_fd(), &bad, b.as_fd()).expect("send");
        assert!(recv(worker.as_fd()).expect("recv").is_some(), "{text_ok}");
        for text in [
            "",
            "stream 1 2 3",
            "stream 1 2 3 nowhere",
            "claim 1 2 3 1.2.3.4:5",
            "stream 1 2 3 1.2.3.4:5 tls",
            "stream 1 2 3 1.2.3.4:5 tls 1:00:00 2:00:00",
        ] {
            assert!(Connection::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn a_tls_connection_travels_with_its_session_keys_which_errors_do_not_show() {
        let keys = format!(
            "5:{}:{} 7:{}:{}",
            "ab".repeat(32),
            "cd".repeat(12),
            "ef".repeat(32),
            "01".repeat(12)
        );
        let mut tls = connection();
        tls.session = Some(SessionKeys::decode(&keys).expect("keys"));
        let (sup, worker) = pair().expect("pair");
        let (_ours, theirs) = UnixStream::pair().expect("stream pair");
        send(sup.as_fd(), &tls, theirs.as_fd()).expect("send");
        let (got, _fd) = recv(worker.as_fd()).expect("recv").expect("a message");
        assert_eq!(fields(&got), fields(&tls));
        assert_eq!(got.session.expect("keys").encode(), keys);
        let broken = tls.to_text().replace(" 7:", " x:");
        let Err(LinkError::BadRecord(shown)) = Connection::parse(&broken) else {
            panic!("a broken key text was accepted");
        };
        assert!(
            !shown.contains("abab") && !shown.contains("efef"),
            "{shown}"
        );
    }
}
