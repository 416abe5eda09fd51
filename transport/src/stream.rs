//! The socket transport (TCP for a host on another machine, Unix sockets as a local baseline): the same
//! message semantics and client identity as the shared-memory channels, over a byte stream.
//!
//! Framing: a handshake, then frames of `u64 little-endian length` + `length` bytes, strictly alternating
//! request/reply. Handshake (client → server, 32 bytes): magic `"VGPUTCP1"`, version `u32`, pid `u32`,
//! tid `u32`, reserved `u32`, client token `u64`. Reply (server → client, 16 bytes): magic, version
//! `u32`, status `u32` (0 = accepted).

use crate::error::{GoneReason, TransportError};
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
/// Version of the stream framing.
pub const STREAM_VERSION: u32 = 2;

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
/// Bytes the stream already holds in this process (a TLS record read with the one before)
/// need no wait.
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

/// This process's client token for socket clients: made once per process (pid and clock mixed;
/// non-zero), so every connection of one process carries the same token and the host serves them
/// in one worker. A forked child (another pid) makes its own.
fn stream_client_token() -> u64 {
    static TOKEN: std::sync::Mutex<(u32, u64)> = std::sync::Mutex::new((0, 0));
    let pid = crate::sys::pid();
    let mut slot = TOKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.0 != pid {
        *slot = (pid, fresh_stream_token());
    }
    slot.1
}

fn fresh_stream_token() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(crate::sys::pid()) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x.max(1)
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
    pub fn over_with_key(mut stream: S, key: Option<&StreamKey>) -> Result<Self, TransportError> {
        let identity = ClientIdentity {
            client_token: stream_client_token(),
            pid: crate::sys::pid(),
            tid: crate::sys::tid(),
        };
        let mut hello = [0u8; 32];
        hello[0..8].copy_from_slice(&STREAM_MAGIC.to_le_bytes());
        hello[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
        hello[12..16].copy_from_slice(&identity.pid.to_le_bytes());
        hello[16..20].copy_from_slice(&identity.tid.to_le_bytes());
        hello[24..32].copy_from_slice(&identity.client_token.to_le_bytes());
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
        Ok(StreamClient { stream, identity })
    }

    /// The identity sent in the handshake.
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
        StreamClient::over_with_key(tcp_connect(addr)?, key)
    }
}

/// A TCP connection to a host, configured as every client's is (`TCP_NODELAY`, keepalive ~5 s
/// so that a vanished host is noticed).
fn tcp_connect(addr: impl ToSocketAddrs) -> Result<TcpStream, TransportError> {
    let stream = TcpStream::connect(addr).map_err(TransportError::io("tcp connect"))?;
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
        let session = crate::tls_handshake::connect(tcp_connect(addr)?, tls)?;
        StreamClient::over_with_key(session, key)
    }
}

impl UnixClient {
    /// Connects to a [`UnixServer`] listening at `path`.
    ///
    /// # Errors
    /// `Io` when the connection fails; handshake errors as for [`StreamClient::over`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(path).map_err(TransportError::io("unix connect"))?;
        StreamClient::over(stream)
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

impl<S: StreamIo> StreamServer<S> {
    /// Performs the server handshake over an accepted stream, without a key: any client with the
    /// right magic and version is accepted.
    ///
    /// # Errors
    /// As for [`StreamServer::over_with_key`].
    pub fn over(stream: S) -> Result<Self, TransportError> {
        Self::over_with_key(stream, None)
    }

    /// Performs the server handshake; with `key`, the client must answer a fresh challenge with
    /// it (`stream_key.rs`) before the connection is accepted.
    ///
    /// # Errors
    /// `BadHandshake` for a wrong magic/version or a wrong answer (the client is told it was
    /// refused); `PeerGone`/`Io`.
    pub fn over_with_key(mut stream: S, key: Option<&StreamKey>) -> Result<Self, TransportError> {
        let mut hello = [0u8; 32];
        stream
            .read_exact(&mut hello)
            .map_err(map_io("receive handshake"))?;
        let u32_at =
            |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
        let mut token = [0u8; 8];
        token.copy_from_slice(&hello[24..32]);
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
        let client = ClientIdentity {
            client_token: u64::from_le_bytes(token),
            pid: u32_at(12),
            tid: u32_at(16),
        };
        Ok(StreamServer { stream, client })
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

/// TCP listener handing out [`StreamServer`]s.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
}

impl TcpServer {
    /// Binds `addr` (port 0 picks a free port, see [`TcpServer::local_addr`]).
    ///
    /// # Errors
    /// `Io` when binding fails.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Self, TransportError> {
        Ok(TcpServer {
            listener: TcpListener::bind(addr).map_err(TransportError::io("tcp bind"))?,
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
        StreamServer::over(stream)
    }

    /// Waits for the next client, runs the TLS 1.3 handshake (the client must show a
    /// certificate that chains to `tls`'s client CA) and the stream handshake inside the
    /// session (with `key`, the client must also answer the key challenge).
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
        StreamServer::over_with_key(session, key)
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

/// Unix-socket listener handing out [`StreamServer`]s.
#[derive(Debug)]
pub struct UnixServer {
    listener: UnixListener,
}

impl UnixServer {
    /// Binds a socket at `path`.
    ///
    /// # Errors
    /// `Io` when binding fails (e.g. the path exists).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        Ok(UnixServer {
            listener: UnixListener::bind(path).map_err(TransportError::io("unix bind"))?,
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
        StreamServer::over(stream)
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
    fn connections_of_one_process_share_its_token() {
        let (c1, s1) = handshake();
        let (c2, s2) = std::thread::spawn(handshake).join().expect("thread");
        assert_ne!(c1.identity().client_token, 0);
        assert_eq!(c1.identity().client_token, c2.identity().client_token);
        assert_eq!(s1.client(), c1.identity());
        assert_eq!(s2.client(), c2.identity());
        assert_ne!(s1.client().tid, s2.client().tid);
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
