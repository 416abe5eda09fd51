//! Guest/host transport for vgpu: shared-memory rings with doorbells, a bulk area, and a socket
//! transport with the same semantics. Knows nothing of CUDA.
//!
//! Roles (see `docs/transport.md` for the layout, orderings and liveness rules):
//! - **Host main process**: [`Region::create`], then [`Region::accept`] in a loop to learn of new
//!   channels ([`ChannelClaim`]), assigning each new guest process a client id and a credential, and routing later claims by
//!   the id they prove ([`Region::grant`]; one worker per guest process).
//! - **Host worker process**: [`Region::open`], then [`Region::serve`] per claim, one thread per
//!   [`HostChannel`], looping [`HostChannel::recv`] / [`HostChannel::reply`].
//! - **Guest** (one channel per calling thread): [`Region::open`], [`Region::connect`],
//!   [`GuestChannel::call`].
//! - **Remote host**: [`TcpServer`] / [`TlsClient`] (TLS 1.3 with client certificates,
//!   `tls_*.rs`; [`TcpClient`] in clear text), behind the same [`Transport`] /
//!   [`ServerTransport`] traits.
//!
//! ```
//! use std::time::Duration;
//! use transport::{Region, RegionConfig};
//!
//! let path = format!("/dev/shm/vgpu-doc-example-{}", std::process::id());
//! let config = RegionConfig { channel_count: 2, bulk_size: 1 << 20, ..RegionConfig::default() };
//! let host = Region::create(&path, &config)?;
//!
//! // Guest side (normally another process): one channel per calling thread.
//! let guest = Region::open(&path)?;
//! let mut channel = guest.connect()?;
//!
//! // Host side: learn of the claim, admit it (a new client: the host mints its identity), grant
//! // and serve it (normally in a worker process).
//! let claim = host.accept(Duration::from_secs(1))?.expect("a claim");
//! let mut served = host.admit_and_serve(claim)?;
//! let server = std::thread::spawn(move || {
//!     let mut request = Vec::new();
//!     served.recv(&mut request)?;
//!     served.reply(&request.repeat(2))
//! });
//!
//! let mut response = Vec::new();
//! channel.call(b"ping", &mut response)?;
//! assert_eq!(response, b"pingping");
//! server.join().unwrap()?;
//! # drop(channel);
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), transport::TransportError>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]
#![cfg_attr(loom, allow(dead_code))]

mod claim;
mod ring;
mod sync;

#[cfg(not(loom))]
mod bulk;
#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod doorbell;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod identity;
#[cfg(not(loom))]
mod layout;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod stream;
#[cfg(not(loom))]
mod stream_io;
#[cfg(not(loom))]
mod stream_key;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod tls_config;
#[cfg(not(loom))]
mod tls_handshake;
#[cfg(not(loom))]
mod tls_record;
#[cfg(not(loom))]
mod truncation;
#[cfg(not(loom))]
mod usage;

#[cfg(all(test, not(loom)))]
mod hostile_tests;
#[cfg(all(test, not(loom)))]
mod tls_tests;

/// The longest message either transport carries (2 GiB). Larger payloads are split by the
/// caller (the shim copies in chunks); a peer announcing a longer message is cut off before
/// anything is allocated for it, so a hostile length cannot grow a worker without bound.
pub const MAX_MESSAGE_LEN: u64 = 2 << 30;

#[cfg(not(loom))]
pub use crate::{
    bulk::BulkBlock,
    channel::{GuestChannel, HostChannel},
    doorbell::{
        spin as doorbell_spin, DoorbellMode, LIVENESS_EVERY, POLL_SLEEP_CAP, POLL_YIELD, SPIN,
    },
    error::{GoneReason, TransportError},
    identity::{mint_client_id, Credential, Refusal, StreamClients, CREDENTIAL_LEN},
    layout::{FRAME_HEADER_SIZE, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_CHANNELS},
    region::{
        Admitted, ChannelClaim, Region, RegionConfig, DEFAULT_PEER_TIMEOUT, MAX_PEER_TIMEOUT,
        MIN_PEER_TIMEOUT,
    },
    stream::{
        Hello, StreamClient, StreamHello, StreamServer, TcpClient, TcpServer, TlsClient,
        UnixClient, UnixServer, STREAM_MAGIC, STREAM_VERSION,
    },
    stream_io::StreamIo,
    stream_key::{hmac_sha256, random_bytes, KeyError, StreamKey, CHALLENGE_LEN, MIN_KEY_LEN},
    tls_config::{TlsClientConfig, TlsConfigError, TlsServerConfig},
    tls_handshake::{accept as tls_accept, connect as tls_connect},
    tls_record::{SessionKeys, SessionKeysError, TlsStream, MAX_PLAINTEXT as TLS_MAX_PLAINTEXT},
    truncation::protect as protect_from_truncation,
    usage::BulkUsage,
};

/// Who a server is talking to: the same fields over shared memory and sockets.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The id the host assigned the guest process (0 until assigned); unique per region or
    /// listener. The guest's pid and tid below are informational only.
    pub client_id: u64,
    /// Guest process id (in the guest's kernel).
    pub pid: u32,
    /// Guest thread id (in the guest's kernel).
    pub tid: u32,
}

/// Client side of any transport: one synchronous request/reply at a time, plus requests posted
/// without waiting.
#[cfg(not(loom))]
pub trait Transport {
    /// Sends `request` and waits for the reply, which replaces the contents of `response`.
    ///
    /// # Errors
    /// `PeerGone` once the server is gone (not merely slow); see each implementation.
    fn call(&mut self, request: &[u8], response: &mut Vec<u8>) -> Result<(), TransportError>;

    /// Sends `request` without waiting for anything back: the server must send no reply to it
    /// (the caller marks such requests in its own protocol). Requests are delivered in order, so
    /// a later [`Transport::call`]'s reply is that call's. When the way to the server is full the
    /// sender waits for space, as `call` does.
    ///
    /// # Errors
    /// As for [`Transport::call`]; a request accepted here may still be lost if the server dies
    /// before reading it, which the next `call` reports.
    fn post(&mut self, request: &[u8]) -> Result<(), TransportError>;
}

/// Server side of any transport.
#[cfg(not(loom))]
pub trait ServerTransport {
    /// The connected client.
    fn client(&self) -> ClientIdentity;
    /// Waits for the next request, which replaces the contents of `request`.
    ///
    /// # Errors
    /// `Closed`/`PeerGone` when the client left or died.
    fn recv(&mut self, request: &mut Vec<u8>) -> Result<(), TransportError>;
    /// Replies to the last request.
    ///
    /// # Errors
    /// `PeerGone` when the client died.
    fn reply(&mut self, response: &[u8]) -> Result<(), TransportError>;
}
