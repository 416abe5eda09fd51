//! The one error type of the crate.

use std::io;

/// Why a peer is considered gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// The peer process no longer exists (or is a zombie, or its pid was reused); same-kernel check.
    ProcessExited,
    /// The peer's heartbeat word did not move for longer than the region's peer timeout.
    HeartbeatStalled,
    /// The host re-initialised the region (its generation word changed).
    HostRestarted,
    /// The connection was closed by the peer (TCP/Unix socket end of stream or reset).
    Disconnected,
    /// The host lives, but no worker served this guest channel within the region's peer timeout
    /// of its claim.
    NotServed,
    /// The region file was shrunk under this process's mapping (a guest truncated it): what the
    /// region held is gone (see `truncation.rs`).
    RegionTruncated,
}

impl std::fmt::Display for GoneReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GoneReason::ProcessExited => "its process exited",
            GoneReason::HeartbeatStalled => "its heartbeat stalled for the peer timeout",
            GoneReason::HostRestarted => "the host re-initialised the region",
            GoneReason::Disconnected => "the connection was closed",
            GoneReason::NotServed => {
                "the host lives but no worker served this channel within the peer timeout"
            }
            GoneReason::RegionTruncated => "the region file was shrunk (truncated) under it",
        })
    }
}

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The region does not start with the transport's magic number.
    #[error(
        "region magic is {found:#018x}, expected {expected:#018x}: not a vgpu transport region"
    )]
    BadMagic {
        /// Magic found in the region.
        found: u64,
        /// Magic this build expects.
        expected: u64,
    },
    /// The region was laid out by a different version of this crate.
    #[error("region layout version {found}, this build speaks {expected}")]
    LayoutVersion {
        /// Version found in the region.
        found: u32,
        /// Version this build speaks.
        expected: u32,
    },
    /// The region was set up by a peer with another pointer width.
    #[error("region word size {found} bytes, this build uses {expected}")]
    WordSize {
        /// Word size found.
        found: u32,
        /// Word size of this build.
        expected: u32,
    },
    /// The host has not (yet) finished initialising the region.
    #[error("region is not initialised (host not started or still setting up)")]
    NotInitialised,
    /// The file is smaller than the layout needs.
    #[error("region file holds {actual} bytes, layout needs {needed}")]
    TooSmall {
        /// Bytes the layout needs.
        needed: u64,
        /// Bytes available.
        actual: u64,
    },
    /// The region uses futex doorbells but was created on another kernel (e.g. this is a VM guest and
    /// the file is an ivshmem BAR): futexes and pids do not cross kernels.
    #[error("region uses futex doorbells but was created on another kernel (a VM host?); the host must create it with DoorbellMode::Poll")]
    ForeignKernel,
    /// A header field is out of range or inconsistent.
    #[error("region header field `{0}` is invalid")]
    BadHeader(&'static str),
    /// A `RegionConfig` value is out of range.
    #[error("invalid region config: {0}")]
    BadConfig(&'static str),
    /// Every channel is claimed by a live process.
    #[error("no free channel in the region")]
    NoFreeChannel,
    /// The channel index/epoch does not name a claimed channel.
    #[error("channel {0} is not claimed (or was re-claimed by another client)")]
    NotClaimed(u32),
    /// The peer died, stopped beating or restarted; the call was abandoned.
    #[error("peer is gone: {0}")]
    PeerGone(GoneReason),
    /// The guest released the channel (normal end of a client thread).
    #[error("channel closed by the client")]
    Closed,
    /// The peer wrote bytes that no correct peer writes (counter, frame kind, offset, length).
    #[error("peer wrote corrupt data: {0}")]
    Corrupt(&'static str),
    /// This channel was opened by the parent before `fork`; a child must `connect` its own.
    #[error("channel belongs to the parent process (pid {owner}); connect a new one after fork")]
    ForkedChild {
        /// The pid that owns the channel.
        owner: u32,
    },
    /// A message longer than [`crate::MAX_MESSAGE_LEN`]: refused before it is sent, and a peer
    /// that announces one is cut off (`Corrupt`) before anything is allocated for it.
    #[error("message of {0} bytes exceeds the transport's limit of {max} bytes", max = crate::MAX_MESSAGE_LEN)]
    MessageTooLarge(u64),
    /// The bulk area has no free run of the requested size.
    #[error("bulk area has no free run of {0} bytes")]
    BulkExhausted(u64),
    /// A bulk block handle does not describe a block owned by the caller.
    #[error("bulk block at {offset} (+{len}) is not owned by {owner:#x} or out of range")]
    BadBlock {
        /// Offset inside the bulk area.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Expected owner.
        owner: u64,
    },
    /// The stream peer sent a handshake this build does not understand.
    #[error("bad handshake from stream peer: {0}")]
    BadHandshake(&'static str),

    /// The host refused the claim or connection (identity or limit); the guest was not harmed
    /// and may try again later (a limit) or as a new client (an identity the host forgot).
    #[error("the host refused the client: {0}")]
    Refused(crate::identity::Refusal),

    /// The TLS handshake failed: a certificate that does not verify or is missing, a peer that
    /// does not speak TLS 1.3 with this build's suite, or not TLS at all.
    #[error("tls: {0}")]
    Tls(rustls::Error),
}

impl TransportError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> TransportError {
        move |source| TransportError::Io { context, source }
    }
}
