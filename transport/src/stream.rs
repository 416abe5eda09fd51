//! The socket transport (TCP for a host on another machine, Unix sockets as a local baseline): the same
//! message semantics and client identity as the shared-memory channels, over a byte stream.
//!
//! Framing: a handshake, then frames of `u64 little-endian length` + `length` bytes, strictly alternating
//! request/reply. Handshake (client → server, 40 bytes): magic `"VGPUTCP1"`, version `u32`, pid `u32`,
//! tid `u32`, reserved `u32`, credential (16 bytes; zeros: a process's first connection). Reply
//! (server → client, 16 bytes): magic, version `u32`, status `u32` (0 = go on, 1 = refused,
//! 2 = key challenge follows, `stream_key.rs`). Then the admission (server → client, 28 bytes):
//! status `u32` (1 granted, 2 unknown identity, 3 over a limit), the client id `u64` the host
//! assigned, and for a new client the credential it minted (zeros otherwise), which the process
//! presents on its later connections to the same endpoint (issue 11; `identity.rs`).

use crate::error::{GoneReason, TransportError};
use crate::identity::{Credential, Refusal, StreamClients, CREDENTIAL_LEN};
use crate::stream_io::StreamIo;
use crate::stream_key::{StreamKey, CHALLENGE_LEN};
use crate::tls_config::{TlsClientConfig, TlsServerConfig};
use crate::tls_record::TlsStream;
use crate::{ClientIdentity, ServerTransport, Transport};
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// `"VGPUTCP1"` as a little-endian u64.
pub const STREAM_MAGIC: u64 = u64::from_le_bytes(*b"VGPUTCP1");
/// Version of the stream framing (3: host-assigned identities, the admission message).
pub const STREAM_VERSION: u32 = 3;
/// Bytes of the client's hello.
const HELLO_LEN: usize = 40;
/// Bytes of the admission message.
const ADMISSION_LEN: usize = 28;
/// Admission statuses.
const ADMIT_GRANTED: u32 = 1;
const ADMIT_UNKNOWN_IDENTITY: u32 = 2;
const ADMIT_LIMIT: u32 = 3;

/// Handshake status: accepted.
const ACK_ACCEPTED: u32 = 0;
/// Handshake status: refused (magic or version).
const ACK_REFUSED: u32 = 1;
/// Handshake status: answer the challenge that follows with the key.
const ACK_KEY_REQUIRED: u32 = 2;

fn map_io(context: &'static str) -> impl Fn(io::Error) -> TransportError {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::TimedOut => TransportError::PeerGone(GoneReason::Disconnected),
        _ => TransportError::Io { context, source: e },
    }
}

fn write_frame(stream: &mut impl StreamIo, msg: &[u8]) -> Result<(), TransportError> {
    if msg.len() as u64 > crate::MAX_MESSAGE_LEN {
        return Err(TransportError::MessageTooLarge(msg.len() as u64));
    }
    let len = (msg.len() as u64).to_le_bytes();
    if msg.len() <= 4096 {
        let mut buf = [0u8; 4096 + 8];
        buf[..8].copy_from_slice(&len);
        buf[8..8 + msg.len()].copy_from_slice(msg);
        stream
            .send_all(&buf[..8 + msg.len()])
            .map_err(map_io("send frame"))
    } else {
        stream.send_all(&len).map_err(map_io("send frame"))?;
        stream.send_all(msg).map_err(map_io("send frame"))
    }
}

/// Waits, spinning, until `fd` has bytes to read (or its peer closed it), for at most the
/// transport's spin (`doorbell::spin`, `VGPU_SPIN_US`), so that the blocking read that follows
/// finds them instead of putting the thread to sleep: on a loopback or a fast link, waking a
/// sleeping reader costs more than the rest of the round trip. As on the shared-memory rings, the
/// thread yields the CPU now and then (every 64 looks), so a peer queued on this CPU runs.
fn spin_until_readable(fd: &impl StreamIo) {
    let spin = crate::doorbell::spin();
    if spin.is_zero() || fd.has_buffered() {
        return;
    }
    let mut started = None;
    let mut looks = 0u32;
    loop {
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer valid for the call; MSG_PEEK leaves the byte in the socket
        // and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return; // bytes, or an orderly close: the read reports either
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) {
            return; // the read reports it
        }
        looks = looks.wrapping_add(1);
        if looks % 64 == 0 {
            if started
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > spin
            {
                return;
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

fn read_frame(stream: &mut impl Read, out: &mut Vec<u8>) -> Result<(), TransportError> {
    let mut len = [0u8; 8];
    stream
        .read_exact(&mut len)
        .map_err(map_io("receive frame"))?;
    let len = u64::from_le_bytes(len);
    if len > crate::MAX_MESSAGE_LEN {
        return Err(TransportError::Corrupt(
            "frame longer than the transport's message limit",
        ));
    }
    out.clear();
    // Grow in steps of at most 8 MiB: a hostile length only costs memory as bytes actually arrive.
    let mut left = len;
    while left > 0 {
        let step = left.min(8 << 20) as usize;
        let at = out.len();
        out.resize(at + step, 0);
        stream
            .read_exact(&mut out[at..])
            .map_err(map_io("receive frame"))?;
        left -= step as u64;
    }
    Ok(())
}

/// The credentials the host granted this process, by endpoint (the peer's address): every
/// connection of one process presents the one its first connection was granted, so the host
/// serves them in one worker. A forked child (another pid) starts with none. Connections without
/// a peer address (socket pairs) present none.
struct Credentials {
    pid: u32,
    by_endpoint: std::collections::HashMap<Vec<u8>, Credential>,
}

static CREDENTIALS: std::sync::Mutex<Option<Credentials>> = std::sync::Mutex::new(None);

/// The peer's address as raw bytes (`getpeername`), or `None` for an unnamed peer.
fn endpoint(fd: &impl AsRawFd) -> Option<Vec<u8>> {
    // SAFETY: an all-zero sockaddr_storage is a valid buffer for getpeername to fill.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` has room for `len` bytes, both live across the call.
    let rc = unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    let len = len as usize;
    if rc != 0 || len <= std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: getpeername wrote `len` bytes (≤ the buffer's size) at `addr`.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&addr as *const libc::sockaddr_storage).cast::<u8>(),
            len.min(std::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    Some(bytes.to_vec())
}

fn set_keepalive(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: `value` is a valid c_int for the duration of the call; failures only lose keepalive.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4);
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 5000);
}

/// Client side of a socket transport.
#[derive(Debug)]
pub struct StreamClient<S> {
    stream: S,
    identity: ClientIdentity,
}

/// TCP client.
pub type TcpClient = StreamClient<TcpStream>;
/// Unix-socket client.
pub type UnixClient = StreamClient<UnixStream>;
/// TLS client over TCP.
pub type TlsClient = StreamClient<TlsStream>;

impl<S: StreamIo> StreamClient<S> {
    /// Performs the client handshake over an already connected stream, without a key.
    ///
    /// # Errors
    /// As for [`StreamClient::over_with_key`].
    pub fn over(stream: S) -> Result<Self, TransportError> {
        Self::over_with_key(stream, None)
    }

    /// Performs the client handshake, answering the server's challenge with `key` when the
    /// server asks for one (`stream_key.rs`).
    ///
    /// # Errors
    /// `BadHandshake` when the server answers with another magic/version, refuses, asks for a key
    /// this client does not have, or rejects its answer; `PeerGone`/`Io`.
    pub fn over_with_key(stream: S, key: Option<&StreamKey>) -> Result<Self, TransportError> {
        let pid = crate::sys::pid();
        // Held across the handshake: a process's first connections to one endpoint are admitted
        // one at a time, so the process becomes one client.
        let mut credentials = CREDENTIALS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if credentials.as_ref().is_none_or(|c| c.pid != pid) {
            *credentials = Some(Credentials {
                pid,
                by_endpoint: std::collections::HashMap::new(),
            });
        }
        let known = credentials.as_mut().map(|c| &mut c.by_endpoint);
        let endpoint = endpoint(&stream);
        let presented = match (&endpoint, &known) {
            (Some(e), Some(k)) => k.get(e).copied(),
            _ => None,
        };
        let outcome = Self::handshake(stream, key, presented);
        if let (Some(e), Some(k)) = (endpoint, known) {
            match &outcome {
                Ok((_, Some(granted))) => {
                    k.insert(e, *granted);
                }
                Err(TransportError::Refused(Refusal::UnknownIdentity)) => {
                    k.remove(&e);
                }
                _ => {}
            }
        }
        outcome.map(|(client, _)| client)
    }

    /// The handshake presenting `presented`; returns the client and, for a new client, the
    /// credential the host granted it.
    fn handshake(
        mut stream: S,
        key: Option<&StreamKey>,
        presented: Option<Credential>,
    ) -> Result<(Self, Option<Credential>), TransportError> {
        let pid = crate::sys::pid();
        let tid = crate::sys::tid();
        let mut hello = [0u8; HELLO_LEN];
        hello[0..8].copy_from_slice(&STREAM_MAGIC.to_le_bytes());
        hello[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        hello[12..16].copy_from_slice(&pid.to_le_bytes());
        hello[16..20].copy_from_slice(&tid.to_le_bytes());
        if let Some(c) = &presented {
            hello[24..40].copy_from_slice(&c.to_bytes());
        }
        stream.send_all(&hello).map_err(map_io("send handshake"))?;
        let mut ack = [0u8; 16];
        stream
            .read_exact(&mut ack)
            .map_err(map_io("receive handshake"))?;
        if ack[0..8] != STREAM_MAGIC.to_le_bytes() {
            return Err(TransportError::BadHandshake("magic"));
        }
        if ack[8..12] != STREAM_VERSION.to_le_bytes() {
            return Err(TransportError::BadHandshake("version"));
        }
        match u32::from_le_bytes([ack[12], ack[13], ack[14], ack[15]]) {
            ACK_ACCEPTED => {}
            ACK_KEY_REQUIRED => {
                let mut challenge = [0u8; CHALLENGE_LEN];
                stream
                    .read_exact(&mut challenge)
                    .map_err(map_io("receive challenge"))?;
                let Some(key) = key else {
                    return Err(TransportError::BadHandshake(
                        "the host requires a key (VGPU_HOST_KEY_FILE)",
                    ));
                };
                stream
                    .send_all(&key.answer(&challenge, &hello))
                    .map_err(map_io("send answer"))?;
                let mut verdict = [0u8; 4];
                stream
                    .read_exact(&mut verdict)
                    .map_err(map_io("receive verdict"))?;
                if u32::from_le_bytes(verdict) != ACK_ACCEPTED {
                    return Err(TransportError::BadHandshake("the host refused the key"));
                }
            }
            _ => return Err(TransportError::BadHandshake("refused")),
        }
        let mut admission = [0u8; ADMISSION_LEN];
        stream
            .read_exact(&mut admission)
            .map_err(map_io("receive admission"))?;
        let status = u32::from_le_bytes([admission[0], admission[1], admission[2], admission[3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&admission[4..12]);
        let client_id = u64::from_le_bytes(id);
        let mut granted = [0u8; CREDENTIAL_LEN];
        granted.copy_from_slice(&admission[12..28]);
        let granted = Credential::from_bytes(granted);
        match status {
            ADMIT_GRANTED => {}
            ADMIT_UNKNOWN_IDENTITY => {
                return Err(TransportError::Refused(Refusal::UnknownIdentity))
            }
            ADMIT_LIMIT => return Err(TransportError::Refused(Refusal::Limit)),
            _ => return Err(TransportError::BadHandshake("admission status")),
        }
        if client_id == 0 || (presented.is_none() && granted.is_none()) {
            return Err(TransportError::BadHandshake(
                "admission without an identity",
            ));
        }
        let identity = ClientIdentity {
            client_id,
            pid,
            tid,
        };
        let granted = presented.is_none().then_some(granted);
        Ok((StreamClient { stream, identity }, granted))
    }

    /// Who the host admitted this connection as: the client id it assigned, and this
    /// process's pid and tid.
    pub fn identity(&self) -> ClientIdentity {
        self.identity
    }
}

impl TcpClient {
    /// Connects to a [`TcpServer`] (TCP_NODELAY, keepalive ~5 s so a vanished host is noticed).
    ///
    /// # Errors
    /// `Io` when the connection fails; handshake errors as for [`StreamClient::over`].
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self, TransportError> {
        Self::connect_with_key(addr, None)
    }

    /// As [`TcpClient::connect`], answering the server's challenge with `key`.
    ///
    /// # Errors
    /// As for [`TcpClient::connect`] and [`StreamClient::over_with_key`].
    pub fn connect_with_key(
        addr: impl ToSocketAddrs,
        key: Option<&StreamKey>,
    ) -> Result<Self, TransportError> {
        let addrs = resolve(addr)?;
        retry_as_new(|| StreamClient::over_with_key(tcp_connect(&addrs)?, key))
    }
}

/// `addr`'s addresses, resolved once for every attempt.
fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<std::net::SocketAddr>, TransportError> {
    Ok(addr
        .to_socket_addrs()
        .map_err(TransportError::io("tcp address"))?
        .collect())
}

/// Runs `attempt` once more when the host no longer knows this process (its worker ended): the
/// credential was dropped, so the next attempt comes as a new client.
fn retry_as_new<T>(attempt: impl Fn() -> Result<T, TransportError>) -> Result<T, TransportError> {
    match attempt() {
        Err(TransportError::Refused(Refusal::UnknownIdentity)) => attempt(),
        other => other,
    }
}

/// A TCP connection to a host, configured as every client's is (`TCP_NODELAY`, keepalive ~5 s
/// so that a vanished host is noticed).
fn tcp_connect(addrs: &[std::net::SocketAddr]) -> Result<TcpStream, TransportError> {
    let stream = TcpStream::connect(addrs).map_err(TransportError::io("tcp connect"))?;
    stream
        .set_nodelay(true)
        .map_err(TransportError::io("tcp nodelay"))?;
    set_keepalive(&stream);
    Ok(stream)
}

impl TlsClient {
    /// Connects to a host over TCP, runs the TLS 1.3 handshake (the host's certificate must
    /// verify against `tls`'s CA and name; this client shows its own), then the stream handshake
    /// inside the session, answering the host's challenge with `key` if it asks.
    ///
    /// # Errors
    /// `Io` when the connection fails; [`TransportError::Tls`] when either certificate is
    /// refused; handshake errors as for [`StreamClient::over_with_key`].
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        tls: &TlsClientConfig,
        key: Option<&StreamKey>,
    ) -> Result<Self, TransportError> {
        let addrs = resolve(addr)?;
        retry_as_new(|| {
            let session = crate::tls_handshake::connect(tcp_connect(&addrs)?, tls)?;
            StreamClient::over_with_key(session, key)
        })
    }
}

impl UnixClient {
    /// Connects to a [`UnixServer`] listening at `path`.
    ///
    /// # Errors
    /// `Io` when the connection fails; handshake errors as for [`StreamClient::over`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        let path = path.as_ref();
        retry_as_new(|| {
            let stream = UnixStream::connect(path).map_err(TransportError::io("unix connect"))?;
            StreamClient::over(stream)
        })
    }
}

impl<S: StreamIo> Transport for StreamClient<S> {
    fn call(&mut self, request: &[u8], response: &mut Vec<u8>) -> Result<(), TransportError> {
        write_frame(&mut self.stream, request)?;
        spin_until_readable(&self.stream);
        read_frame(&mut self.stream, response)
    }

    fn post(&mut self, request: &[u8]) -> Result<(), TransportError> {
        write_frame(&mut self.stream, request)
    }
}

/// Server side of one accepted socket connection.
#[derive(Debug)]
pub struct StreamServer<S> {
    stream: S,
    client: ClientIdentity,
}

/// What a socket client said in its hello: its pid and tid (informational only: on another
/// machine they name nothing here) and the credential it presents (`None`: a process's first
/// connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Guest process id, as the guest says.
    pub pid: u32,
    /// Guest thread id, as the guest says.
    pub tid: u32,
    /// The credential presented.
    pub presented: Option<Credential>,
}

/// A socket connection whose hello (and key answer) the server checked, waiting for the host's
/// admission: [`StreamHello::admit`] or [`StreamHello::refuse`]. It may travel to another
/// process first ([`StreamHello::into_parts`], [`StreamHello::resume`]).
#[derive(Debug)]
pub struct StreamHello<S> {
    stream: S,
    hello: Hello,
}

impl<S: StreamIo> StreamHello<S> {
    /// Runs the server's half of the handshake up to the admission; with `key`, the client must
    /// answer a fresh challenge with it (`stream_key.rs`).
    ///
    /// # Errors
    /// `BadHandshake` for a wrong magic/version or a wrong answer (the client is told it was
    /// refused); `PeerGone`/`Io`.
    pub fn read(mut stream: S, key: Option<&StreamKey>) -> Result<Self, TransportError> {
        let mut hello = [0u8; HELLO_LEN];
        stream
            .read_exact(&mut hello)
            .map_err(map_io("receive handshake"))?;
        let u32_at =
            |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
        let ok_magic = hello[0..8] == STREAM_MAGIC.to_le_bytes();
        let ok_version = u32_at(8) == STREAM_VERSION;
        let status = match (ok_magic && ok_version, key) {
            (false, _) => ACK_REFUSED,
            (true, None) => ACK_ACCEPTED,
            (true, Some(_)) => ACK_KEY_REQUIRED,
        };
        let mut ack = [0u8; 16];
        ack[0..8].copy_from_slice(&STREAM_MAGIC.to_le_bytes());
        ack[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        ack[12..16].copy_from_slice(&status.to_le_bytes());
        stream.send_all(&ack).map_err(map_io("send handshake"))?;
        if !ok_magic {
            return Err(TransportError::BadHandshake("magic"));
        }
        if !ok_version {
            return Err(TransportError::BadHandshake("version"));
        }
        if let Some(key) = key {
            let challenge = crate::stream_key::challenge()?;
            stream
                .send_all(&challenge)
                .map_err(map_io("send challenge"))?;
            let mut answer = [0u8; CHALLENGE_LEN];
            stream
                .read_exact(&mut answer)
                .map_err(map_io("receive answer"))?;
            let accepted = key.accepts(&challenge, &hello, &answer);
            let verdict = if accepted { ACK_ACCEPTED } else { ACK_REFUSED };
            stream
                .send_all(&verdict.to_le_bytes())
                .map_err(map_io("send verdict"))?;
            if !accepted {
                return Err(TransportError::BadHandshake("wrong key"));
            }
        }
        let mut presented = [0u8; CREDENTIAL_LEN];
        presented.copy_from_slice(&hello[24..40]);
        let presented = Credential::from_bytes(presented);
        Ok(StreamHello {
            stream,
            hello: Hello {
                pid: u32_at(12),
                tid: u32_at(16),
                presented: (!presented.is_none()).then_some(presented),
            },
        })
    }

    /// Admits the connection as client `client_id`; a new client's first connection also gets
    /// its `credential`.
    ///
    /// # Errors
    /// `PeerGone`/`Io` when the admission cannot be sent.
    pub fn admit(
        mut self,
        client_id: u64,
        credential: Option<&Credential>,
    ) -> Result<StreamServer<S>, TransportError> {
        self.send_admission(ADMIT_GRANTED, client_id, credential)?;
        Ok(StreamServer {
            stream: self.stream,
            client: ClientIdentity {
                client_id,
                pid: self.hello.pid,
                tid: self.hello.tid,
            },
        })
    }

    /// Refuses the connection (then closes it).
    ///
    /// # Errors
    /// `PeerGone`/`Io` when the refusal cannot be sent.
    pub fn refuse(mut self, why: Refusal) -> Result<(), TransportError> {
        let status = match why {
            Refusal::UnknownIdentity => ADMIT_UNKNOWN_IDENTITY,
            Refusal::Limit => ADMIT_LIMIT,
        };
        self.send_admission(status, 0, None)
    }

    fn send_admission(
        &mut self,
        status: u32,
        client_id: u64,
        credential: Option<&Credential>,
    ) -> Result<(), TransportError> {
        let mut admission = [0u8; ADMISSION_LEN];
        admission[0..4].copy_from_slice(&status.to_le_bytes());
        admission[4..12].copy_from_slice(&client_id.to_le_bytes());
        if let Some(c) = credential {
            admission[12..28].copy_from_slice(&c.to_bytes());
        }
        self.stream
            .send_all(&admission)
            .map_err(map_io("send admission"))
    }

    /// Admits by `clients`: a new client, or one `clients` minted; refuses anything else.
    ///
    /// # Errors
    /// `Refused` (after telling the client), or the errors of [`StreamHello::admit`].
    pub fn admit_by(self, clients: &StreamClients) -> Result<StreamServer<S>, TransportError> {
        match clients.admit(self.hello.presented.as_ref()) {
            Ok((id, credential)) => self.admit(id, credential.as_ref()),
            Err(TransportError::Refused(why)) => {
                self.refuse(why)?;
                Err(TransportError::Refused(why))
            }
            Err(e) => Err(e),
        }
    }
}

impl<S> StreamHello<S> {
    /// What the client said.
    pub fn hello(&self) -> Hello {
        self.hello
    }

    /// The stream and the hello, e.g. to pass the socket to the process that decides the
    /// admission, which continues with [`StreamHello::resume`].
    pub fn into_parts(self) -> (S, Hello) {
        (self.stream, self.hello)
    }

    /// A connection whose hello was read elsewhere: no bytes are exchanged.
    pub fn resume(stream: S, hello: Hello) -> Self {
        StreamHello { stream, hello }
    }
}

impl<S: StreamIo> StreamServer<S> {
    /// Performs the server handshake over an accepted stream, without a key: any client with the
    /// right magic and version is accepted.
    ///
    /// # Errors
    /// As for [`StreamServer::over_with_key`].
    pub fn over(stream: S) -> Result<Self, TransportError> {
        Self::over_with_key(stream, None)
    }

    /// Performs the whole server handshake for a server of this one connection: with `key`, the
    /// client must answer a fresh challenge with it; it is admitted as a new client, and a
    /// presented credential (minted by no one this server knows) is refused.
    ///
    /// # Errors
    /// `BadHandshake` for a wrong magic/version or a wrong answer (the client is told it was
    /// refused); `Refused`; `PeerGone`/`Io`.
    pub fn over_with_key(stream: S, key: Option<&StreamKey>) -> Result<Self, TransportError> {
        StreamHello::read(stream, key)?.admit_by(&StreamClients::default())
    }
}

impl<S> StreamServer<S> {
    /// A connection whose handshake was completed elsewhere (e.g. by a supervisor process that
    /// then passed the socket on): no bytes are exchanged.
    pub fn resume(stream: S, client: ClientIdentity) -> Self {
        StreamServer { stream, client }
    }

    /// The stream and the client identity from the handshake, e.g. to pass the socket to
    /// another process, which continues with [`StreamServer::resume`].
    pub fn into_parts(self) -> (S, ClientIdentity) {
        (self.stream, self.client)
    }
}

impl<S: StreamIo> ServerTransport for StreamServer<S> {
    fn client(&self) -> ClientIdentity {
        self.client
    }
    fn recv(&mut self, request: &mut Vec<u8>) -> Result<(), TransportError> {
        spin_until_readable(&self.stream);
        read_frame(&mut self.stream, request)
    }
    fn reply(&mut self, response: &[u8]) -> Result<(), TransportError> {
        write_frame(&mut self.stream, response)
    }
}

/// TCP listener handing out [`StreamServer`]s; the identities it admits are its own.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
    clients: StreamClients,
}

impl TcpServer {
    /// Binds `addr` (port 0 picks a free port, see [`TcpServer::local_addr`]).
    ///
    /// # Errors
    /// `Io` when binding fails.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Self, TransportError> {
        Ok(TcpServer {
            listener: TcpListener::bind(addr).map_err(TransportError::io("tcp bind"))?,
            clients: StreamClients::default(),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// `Io` from getsockname.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr, TransportError> {
        self.listener
            .local_addr()
            .map_err(TransportError::io("tcp local_addr"))
    }

    /// Waits for the next client and performs the handshake.
    ///
    /// # Errors
    /// `Io` from accept; handshake errors as for [`StreamServer::over`].
    pub fn accept(&self) -> Result<StreamServer<TcpStream>, TransportError> {
        let (stream, _) = self.accept_connection()?;
        StreamHello::read(stream, None)?.admit_by(&self.clients)
    }

    /// Waits for the next client, runs the TLS 1.3 handshake (the client must show a
    /// certificate that chains to `tls`'s client CA) and the stream handshake inside the
    /// session (with `key`, the client must also answer the key challenge); admits it by this
    /// listener's identities, as [`TcpServer::accept`] does.
    ///
    /// # Errors
    /// `Io` from accept; [`TransportError::Tls`] for a client refused in the TLS handshake;
    /// handshake errors as for [`StreamServer::over_with_key`].
    pub fn accept_tls(
        &self,
        tls: &TlsServerConfig,
        key: Option<&StreamKey>,
    ) -> Result<StreamServer<TlsStream>, TransportError> {
        let (stream, _) = self.accept_connection()?;
        let (session, _) = crate::tls_handshake::accept(stream, tls)?;
        StreamHello::read(session, key)?.admit_by(&self.clients)
    }

    /// Waits for the next connection and configures it as [`TcpServer::accept`] does
    /// (`TCP_NODELAY`, keepalive ~5 s), without the handshake: for a server that runs the
    /// handshake elsewhere, e.g. on another thread under a read timeout, so that a silent peer
    /// cannot hold up the next accept.
    ///
    /// # Errors
    /// `Io` from accept or setting `TCP_NODELAY`.
    pub fn accept_connection(&self) -> Result<(TcpStream, std::net::SocketAddr), TransportError> {
        let (stream, peer) = self
            .listener
            .accept()
            .map_err(TransportError::io("tcp accept"))?;
        stream
            .set_nodelay(true)
            .map_err(TransportError::io("tcp nodelay"))?;
        set_keepalive(&stream);
        Ok((stream, peer))
    }
}

/// Unix-socket listener handing out [`StreamServer`]s; the identities it admits are its own.
#[derive(Debug)]
pub struct UnixServer {
    listener: UnixListener,
    clients: StreamClients,
}

impl UnixServer {
    /// Binds a socket at `path`.
    ///
    /// # Errors
    /// `Io` when binding fails (e.g. the path exists).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        Ok(UnixServer {
            listener: UnixListener::bind(path).map_err(TransportError::io("unix bind"))?,
            clients: StreamClients::default(),
        })
    }

    /// Waits for the next client and performs the handshake.
    ///
    /// # Errors
    /// `Io` from accept; handshake errors as for [`StreamServer::over`].
    pub fn accept(&self) -> Result<StreamServer<UnixStream>, TransportError> {
        let (stream, _) = self
            .listener
            .accept()
            .map_err(TransportError::io("unix accept"))?;
        StreamHello::read(stream, None)?.admit_by(&self.clients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handshakes a client over one end of a socket pair; returns both sides.
    fn handshake() -> (UnixClient, StreamServer<UnixStream>) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let server = std::thread::spawn(move || StreamServer::over(b).expect("server handshake"));
        let client = StreamClient::over(a).expect("client handshake");
        (client, server.join().expect("server thread"))
    }

    #[test]
    fn connections_of_one_process_share_the_identity_the_host_minted() {
        let path = std::env::temp_dir().join(format!("vgpu-stream-id-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = UnixServer::bind(&path).expect("bind");
        let accepting = std::thread::spawn(move || {
            let a = server.accept().expect("first");
            let b = server.accept().expect("second");
            (a.client(), b.client(), server)
        });
        let c1 = UnixClient::connect(&path).expect("connect");
        let other = path.clone();
        let c2 = std::thread::spawn(move || UnixClient::connect(&other).expect("connect"))
            .join()
            .expect("thread");
        let (s1, s2, server) = accepting.join().expect("server thread");
        assert_ne!(c1.identity().client_id, 0);
        assert_eq!(c1.identity().client_id, c2.identity().client_id);
        assert_eq!((s1, s2), (c1.identity(), c2.identity()));
        assert_ne!(s1.tid, s2.tid);
        // A server that did not mint the credential refuses it: the client comes back as new.
        drop(server);
        std::fs::remove_file(&path).expect("unlink");
        let elsewhere = UnixServer::bind(&path).expect("bind again");
        let accepting = std::thread::spawn(move || {
            let refused = elsewhere.accept();
            let admitted = elsewhere.accept().expect("as a new client");
            (refused, admitted.client())
        });
        let c3 = UnixClient::connect(&path).expect("connect after the refusal");
        let (refused, s3) = accepting.join().expect("server thread");
        assert!(matches!(
            refused,
            Err(TransportError::Refused(Refusal::UnknownIdentity))
        ));
        assert_eq!(s3, c3.identity());
        assert_ne!(c3.identity().client_id, c1.identity().client_id);
        std::fs::remove_file(&path).expect("unlink");
    }

    #[test]
    fn a_made_up_credential_is_refused() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let server = std::thread::spawn(move || StreamServer::over(b));
        let mut hello = [0u8; HELLO_LEN];
        hello[0..8].copy_from_slice(&STREAM_MAGIC.to_le_bytes());
        hello[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        hello[24..40].copy_from_slice(&[0x5a; CREDENTIAL_LEN]);
        crate::stream_io::send_to_fd(&a, &hello).expect("hello");
        let mut reply = [0u8; 16 + ADMISSION_LEN];
        a.read_exact(&mut reply).expect("ack and admission");
        assert_eq!(reply[12..16], ACK_ACCEPTED.to_le_bytes());
        assert_eq!(reply[16..20], ADMIT_UNKNOWN_IDENTITY.to_le_bytes());
        assert_eq!(reply[20..], [0u8; 24], "no id, no credential");
        assert!(matches!(
            server.join().expect("server thread"),
            Err(TransportError::Refused(Refusal::UnknownIdentity))
        ));
    }

    #[test]
    fn a_frame_longer_than_the_limit_is_cut_off_before_any_allocation() {
        let mut announced = Vec::new();
        announced.extend_from_slice(&(crate::MAX_MESSAGE_LEN + 1).to_le_bytes());
        announced.extend_from_slice(&[0u8; 64]);
        let mut out = Vec::new();
        assert!(matches!(
            read_frame(&mut std::io::Cursor::new(announced), &mut out),
            Err(TransportError::Corrupt(_))
        ));
        assert_eq!(out.capacity(), 0, "nothing was allocated for it");
        // A 1 TiB announcement over a real socket: the server refuses it at once.
        let (client, mut server) = handshake();
        crate::stream_io::send_to_fd(&client.stream, &(1u64 << 40).to_le_bytes())
            .expect("announce");
        let mut request = Vec::new();
        assert!(matches!(
            server.recv(&mut request),
            Err(TransportError::Corrupt(_))
        ));
    }

    /// A handshake with keys on either side: (client result, server result).
    fn keyed(
        server_key: Option<StreamKey>,
        client_key: Option<StreamKey>,
    ) -> (
        Result<UnixClient, TransportError>,
        Result<StreamServer<UnixStream>, TransportError>,
    ) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let server =
            std::thread::spawn(move || StreamServer::over_with_key(b, server_key.as_ref()));
        let client = StreamClient::over_with_key(a, client_key.as_ref());
        (client, server.join().expect("server thread"))
    }

    #[test]
    fn a_keyed_server_serves_only_clients_with_its_key() {
        let key = || StreamKey::from_bytes(b"the host's sixteen+ byte key").unwrap();
        let other = StreamKey::from_bytes(b"somebody else's key, long").unwrap();
        let (client, server) = keyed(Some(key()), Some(key()));
        ping_through(client.expect("client"), server.expect("server"));

        let (client, server) = keyed(Some(key()), Some(other));
        assert!(matches!(client, Err(TransportError::BadHandshake(_))));
        assert!(matches!(
            server,
            Err(TransportError::BadHandshake("wrong key"))
        ));
        let (client, server) = keyed(Some(key()), None);
        assert!(
            matches!(client, Err(TransportError::BadHandshake(m)) if m.contains("VGPU_HOST_KEY_FILE"))
        );
        assert!(server.is_err(), "the keyless client hung up");
        // A keyless server accepts a client that has a key (nothing is asked of it).
        let (client, server) = keyed(None, Some(key()));
        assert!(client.is_ok() && server.is_ok());
    }

    #[test]
    fn a_resumed_server_continues_the_stream() {
        let (client, server) = handshake();
        let (stream, identity) = server.into_parts();
        let server = StreamServer::resume(stream, identity);
        assert_eq!(server.client(), client.identity());
        ping_through(client, server);
    }

    /// One `ping` call from `client`, echoed by `server` on a thread.
    fn ping_through(mut client: UnixClient, mut server: StreamServer<UnixStream>) {
        let echo = std::thread::spawn(move || {
            let mut request = Vec::new();
            server.recv(&mut request).expect("recv");
            server.reply(&request).expect("reply");
        });
        let mut response = Vec::new();
        client.call(b"ping", &mut response).expect("call");
        assert_eq!(response, b"ping");
        echo.join().expect("echo thread");
    }
}
