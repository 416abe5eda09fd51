//! TCP listeners: accept connections, run the TLS handshake and the stream handshake inside it
//! (or, with `--tcp-cleartext`, the stream handshake alone) up to the admission, on a
//! short-lived thread under a timeout (a silent peer cannot hold up the next accept), and hand
//! each connection to the supervisor's loop, which decides who it belongs to (issue 11: by the
//! credential it presents, checked against what this listener minted) and routes it to that
//! client's worker, with the TLS session's keys (`transport::TlsStream`).
//!
//! Every connection gets one log line: where it came from and who it said it is, or why it was
//! closed.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use transport::{Hello, SessionKeys, StreamHello, StreamIo, TcpServer, TransportError};

use crate::supervisor::Intake;
use crate::tcp_security::TcpSecurity;

/// Exit status of the host when a `--listen` address cannot be bound.
pub const EXIT_LISTEN: i32 = 6;
/// How long a new connection has to complete the stream handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections in the handshake at once, per listener; more are closed at once (one log line
/// each), so a flood of silent peers costs a bounded number of threads.
pub const MAX_HANDSHAKES: usize = 64;
/// Pause after a failed `accept` (e.g. out of descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection whose hello (and key answer) is checked, waiting for its admission.
#[derive(Debug)]
pub struct Accepted {
    /// The socket, with no read or write timeout left on it.
    pub stream: TcpStream,
    /// What the peer said: pid and tid (informational) and the credential it presents.
    pub hello: Hello,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The listener's address: the namespace of the identities it admits.
    pub listener: SocketAddr,
    /// The TLS session the worker continues (`None` in clear text).
    pub session: Option<SessionKeys>,
    /// The first 8 bytes of the SHA-256 of the client's certificate, in hex (for logs).
    pub certificate: Option<String>,
}

/// One bound TCP listener.
#[derive(Debug)]
pub struct Listener {
    server: TcpServer,
    addr: SocketAddr,
    /// What clients must show.
    security: TcpSecurity,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port; see [`Listener::local_addr`]).
    ///
    /// # Errors
    ///
    /// The bind error.
    pub fn bind(addr: SocketAddr, security: TcpSecurity) -> Result<Self, TransportError> {
        let server = TcpServer::bind(addr)?;
        let addr = server.local_addr()?;
        Ok(Self {
            server,
            addr,
            security,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts connections on a thread of its own for as long as the supervisor's loop takes
    /// them.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(self, intake: Sender<Intake>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(format!("vgpu-listen-{}", self.addr.port()))
            .spawn(move || self.accept_loop(&intake))
            .map(|_| ())
    }

    fn accept_loop(self, intake: &Sender<Intake>) {
        let pending = Arc::new(AtomicUsize::new(0));
        loop {
            let (stream, peer) = match self.server.accept_connection() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(listen = %self.addr, "{e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            // No ordering needed: a counter that only bounds how many threads exist.
            if pending.fetch_add(1, Ordering::Relaxed) >= MAX_HANDSHAKES {
                pending.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(
                    %peer,
                    "tcp connection closed: {MAX_HANDSHAKES} connections already in the handshake"
                );
                continue;
            }
            let intake = intake.clone();
            let in_handshake = pending.clone();
            let security = self.security.clone();
            let listen = self.addr;
            let spawned = std::thread::Builder::new()
                .name("vgpu-handshake".into())
                .spawn(move || {
                    let outcome = handshake(stream, peer, listen, &security);
                    in_handshake.fetch_sub(1, Ordering::Relaxed);
                    match outcome {
                        Ok(accepted) => {
                            // The loop is gone only while the host stops: the connection closes.
                            let _ = intake.send(Intake::Stream(accepted));
                        }
                        Err(why) => tracing::warn!(%peer, "tcp connection closed: {why}"),
                    }
                });
            if let Err(e) = spawned {
                // The closure (and with it the stream) was dropped: the connection is closed.
                pending.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%peer, "tcp connection closed: no handshake thread: {e}");
            }
        }
    }
}

/// Runs the server side of the TLS handshake (unless in clear text) and of the stream
/// handshake, bounded by [`HANDSHAKE_TIMEOUT`] per read or write.
fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    listener: SocketAddr,
    security: &TcpSecurity,
) -> Result<Accepted, String> {
    let timeouts = |s: &TcpStream, t: Option<Duration>| {
        s.set_read_timeout(t)
            .and_then(|()| s.set_write_timeout(t))
            .map_err(|e| format!("cannot set socket timeouts: {e}"))
    };
    timeouts(&stream, Some(HANDSHAKE_TIMEOUT))?;
    let key = security.key.as_deref();
    let Some(tls) = &security.tls else {
        let (stream, hello) = StreamHello::read(stream, key)
            .map_err(refusal)?
            .into_parts();
        timeouts(&stream, None)?;
        return Ok(Accepted {
            stream,
            hello,
            peer,
            listener,
            session: None,
            certificate: None,
        });
    };
    let (session, fingerprint) = transport::tls_accept(stream, tls).map_err(refusal)?;
    let (session, hello) = StreamHello::read(session, key)
        .map_err(refusal)?
        .into_parts();
    if session.has_buffered() {
        return Err("the client sent calls before its handshake was answered; refused".to_owned());
    }
    let (stream, keys) = session
        .into_parts()
        .map_err(|e| format!("handshake failed: {e}"))?;
    timeouts(&stream, None)?;
    Ok(Accepted {
        stream,
        hello,
        peer,
        listener,
        session: Some(keys),
        certificate: Some(
            fingerprint[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
    })
}

/// The log text for a connection refused in its handshake.
fn refusal(e: TransportError) -> String {
    match e {
        TransportError::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!("no handshake within {HANDSHAKE_TIMEOUT:?}")
        }
        TransportError::PeerGone(_) => "the peer left during the handshake".to_owned(),
        TransportError::Tls(why) => format!("TLS handshake failed: {why}; refused"),
        TransportError::BadHandshake("wrong key") => {
            "the client's answer to the key challenge was wrong; refused".to_owned()
        }
        TransportError::BadHandshake(what) => {
            format!("not a vgpu client (bad handshake: {what}); refused")
        }
        other => format!("handshake failed: {other}"),
    }
}
