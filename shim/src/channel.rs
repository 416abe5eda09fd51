//! The calling thread's connection to the host: one transport channel per guest thread, opened
//! on the thread's first forwarded call, greeted with the handshake, and released when the
//! thread ends.
//!
//! CUDA's current context is per thread, so the host runs one thread per channel. A forked child
//! never reuses its parent's channel: the pid is checked on every call.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cuda_headers::{CUresult, CuError, CuResult};
use protocol::handshake::{Hello, Welcome, PROTOCOL_VERSION};
use protocol::{special, Decoder, RequestHeader, ResponseHeader};
use transport::{Refusal, Region, TcpClient, TlsClient, Transport, TransportError};

use crate::config;
use crate::init::host_transport;
use crate::log::{log, Level};
use crate::posted::{self, Poster};

/// The fingerprint of the signature list this shim's marshalling was generated from.
pub const SIGNATURE_FINGERPRINT: u64 = shim_macros::signature_fingerprint!();

/// Set once the host went away mid-call: like a sticky CUDA error, every later call fails fast.
static HOST_LOST: AtomicBool = AtomicBool::new(false);

/// The region, mapped on first use by any thread (never before a CUDA call needs the host).
/// A failed open is not remembered: a guest that starts before its host (a VM booting first)
/// gets `CUDA_ERROR_NOT_INITIALIZED` until the host is up, then works.
static REGION: OnceLock<Region> = OnceLock::new();

/// One thread's connection and its reusable buffers.
pub struct ThreadChannel {
    pid: u32,
    transport: Box<dyn Transport>,
    /// Request frame under construction.
    pub request: Vec<u8>,
    /// Last response frame.
    pub response: Vec<u8>,
    /// What the host said in the handshake.
    pub welcome: Welcome,
    /// The thread id the handshake gave the host.
    tid: u32,
    /// Posting counts, from this channel's first posted call on.
    poster: Option<Arc<Poster>>,
}

thread_local! {
    static CHANNEL: RefCell<Option<ThreadChannel>> = const { RefCell::new(None) };
    /// Synchronous round trips this thread made (the trace shows each call's share).
    static ROUND_TRIPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many synchronous round trips to the host this thread has made so far.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.try_with(std::cell::Cell::get).unwrap_or(0)
}

/// `CUDA_ERROR_DEVICE_UNAVAILABLE`: the host (and with it every handle) is gone.
pub const HOST_GONE: CuError = CuError::DEVICE_UNAVAILABLE;

fn region(path: &std::path::Path) -> CuResult<&'static Region> {
    if let Some(region) = REGION.get() {
        return Ok(region);
    }
    match Region::open(path) {
        // Two threads may both open it; one mapping is kept, the other dropped.
        Ok(region) => Ok(REGION.get_or_init(|| region)),
        Err(e) => {
            report_once(&format!("cannot open region {}: {e}", path.display()));
            Err(CuError::NOT_INITIALIZED)
        }
    }
}

/// The region, if a channel opened it already (zero-copy pinned memory lives in its bulk area).
pub(crate) fn region_if_open() -> Option<&'static Region> {
    REGION.get()
}

fn report_once(why: &str) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    // No ordering needed: the flag only deduplicates a log line.
    if !REPORTED.swap(true, Ordering::Relaxed) {
        log!(
            Level::Error,
            "vgpu host unreachable, CUDA calls return CUDA_ERROR_NOT_INITIALIZED: {why}"
        );
    }
}

fn open() -> CuResult<ThreadChannel> {
    let transport: Box<dyn Transport> = match host_transport()? {
        config::Transport::Region(path) => {
            let region = region(path)?;
            match region.connect() {
                Ok(channel) => Box::new(channel),
                Err(e) => {
                    report_once(&format!(
                        "cannot claim a channel in {}: {e}",
                        path.display()
                    ));
                    return Err(CuError::NOT_INITIALIZED);
                }
            }
        }
        config::Transport::Tcp(addr, security) => {
            let key = match host_key() {
                Ok(key) => key,
                Err(e) => {
                    report_once(&format!("VGPU_HOST_KEY_FILE: {e}"));
                    return Err(CuError::NOT_INITIALIZED);
                }
            };
            let connected: Result<Box<dyn Transport>, TransportError> = match security {
                config::TcpSecurity::Cleartext => {
                    TcpClient::connect_with_key(addr, key.as_ref()).map(|c| Box::new(c) as _)
                }
                config::TcpSecurity::Tls { .. } => match tls_settings(security) {
                    Ok(tls) => {
                        TlsClient::connect_tls(addr, &tls, key.as_ref()).map(|c| Box::new(c) as _)
                    }
                    Err(e) => {
                        report_once(&format!("VGPU_TLS_*: {e}"));
                        return Err(CuError::NOT_INITIALIZED);
                    }
                },
            };
            match connected {
                Ok(client) => client,
                Err(e @ TransportError::Refused(_)) => return Err(transport_failure(&e)),
                Err(e) => {
                    report_once(&format!("cannot connect to {addr}: {e}"));
                    return Err(CuError::NOT_INITIALIZED);
                }
            }
        }
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let mut channel = ThreadChannel {
        pid: std::process::id(),
        transport,
        request: Vec::with_capacity(4096),
        response: Vec::with_capacity(4096),
        welcome: Welcome {
            protocol_version: 0,
            driver_version: 0,
            worker_pid: 0,
        },
        tid,
        poster: None,
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        signature_fingerprint: SIGNATURE_FINGERPRINT,
        word_size: std::mem::size_of::<usize>() as u8,
        pid: std::process::id(),
        tid,
    };
    let result = channel.exchange(
        |req| hello.encode(&mut RequestHeader::start(req, special::HELLO, 0)),
        |dec| Welcome::decode(dec).map_err(|_| CuError::UNKNOWN),
    );
    match result {
        Ok(welcome) => {
            channel.welcome = welcome;
            Ok(channel)
        }
        // Over a client or connection limit (logged by `transport_failure`).
        Err(e) if e == CuError::OUT_OF_MEMORY => Err(e),
        Err(e) => {
            report_once(&format!("the host refused the handshake ({e:?})"));
            Err(CuError::NOT_INITIALIZED)
        }
    }
}

impl ThreadChannel {
    /// One round trip: `encode` writes the whole request frame, `decode` reads the response after
    /// its header. A non-success result code from the host is returned as the error; `decode`
    /// runs whenever the host sent a body, for failures too (a JIT error log comes with one).
    ///
    /// When a call this thread posted earlier failed, the host does not run this one: the
    /// posted call's error is returned instead (once), with one log line naming it.
    ///
    /// # Errors
    /// The host's result code, [`HOST_GONE`] when the host died, `CUDA_ERROR_UNKNOWN` for a
    /// response that does not decode.
    pub fn exchange<R>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>),
        decode: impl FnOnce(&mut Decoder<'_>) -> CuResult<R>,
    ) -> CuResult<R> {
        encode(&mut self.request);
        RequestHeader::insert_marks(&mut self.request, &posted::marks(self.poster.as_ref()));
        let _ = ROUND_TRIPS.try_with(|n| n.set(n.get() + 1));
        if let Err(e) = self.transport.call(&self.request, &mut self.response) {
            return Err(transport_failure(&e));
        }
        if let Some(poster) = &self.poster {
            poster.confirm();
        }
        let mut dec = Decoder::new(&self.response);
        let header = ResponseHeader::read(&mut dec).map_err(|e| {
            log!(Level::Error, "malformed response from the host: {e}");
            CuError::UNKNOWN
        })?;
        if let Some(deferred) = header.deferred {
            return Err(report_deferred(&self.request, deferred));
        }
        let result = cuda_headers::cu_result::check(CUresult(header.result));
        if let (Err(e), 0) = (result, dec.remaining()) {
            return Err(e);
        }
        let value = decode(&mut dec)?;
        result.map(|()| value)
    }
}

impl ThreadChannel {
    /// Posts one call: `encode` writes the whole request frame, which is sent without waiting
    /// for the host (see [`crate::posted`]). Returns as soon as the request is in the ring (or
    /// the socket); a failure shows at this thread's next synchronous call.
    ///
    /// # Errors
    /// [`HOST_GONE`] when the host is gone.
    pub fn post(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> CuResult {
        encode(&mut self.request);
        RequestHeader::mark_posted(&mut self.request);
        RequestHeader::insert_marks(&mut self.request, &posted::marks(self.poster.as_ref()));
        if let Err(e) = self.transport.post(&self.request) {
            return Err(transport_failure(&e));
        }
        let tid = self.tid;
        self.poster
            .get_or_insert_with(|| Poster::register(tid))
            .posted_one();
        posted::note_posted();
        Ok(())
    }
}

impl Drop for ThreadChannel {
    /// Flushes posted calls that no response has confirmed yet (the thread is ending: any
    /// failure among them is logged), then retires the channel's posting counts.
    fn drop(&mut self) {
        let Some(poster) = self.poster.take() else {
            return;
        };
        // No ordering needed: see `transport_failure`.
        if poster.has_unconfirmed()
            && !HOST_LOST.load(Ordering::Relaxed)
            && self.pid == std::process::id()
        {
            self.poster = Some(poster.clone());
            let _ = self.exchange(
                |req| {
                    RequestHeader::start(req, special::FLUSH, 0);
                },
                |_| Ok(()),
            );
            self.poster = None;
        }
        poster.retire();
    }
}

/// Logs a posted call's failure that the host reported instead of running `request`'s call,
/// and returns the error.
fn report_deferred(request: &[u8], deferred: protocol::DeferredError) -> CuError {
    let name = |id: u32| {
        crate::EXPORTED_FUNCTIONS
            .get(id as usize)
            .map_or_else(|| format!("call {id:#x}"), |n| (*n).to_owned())
    };
    let now = RequestHeader::read(&mut Decoder::new(request)).map_or(0, |h| h.call.0);
    let more = match deferred.more {
        0 => String::new(),
        n => format!(" ({n} later posted calls failed too)"),
    };
    let error = CuError::new(CUresult(deferred.result)).unwrap_or(CuError::UNKNOWN);
    // A posted attribute set may be among the failures: what the guest kept of it is not known
    // to be true any more.
    crate::local_cache::attributes_changed();
    log!(
        Level::Warn,
        "posted {} failed with {}{more}; reported by the next synchronous call, {}, which did not run",
        name(deferred.call.0),
        crate::trace::result_name(CUresult(deferred.result)),
        name(now)
    );
    error
}

/// The key a TCP host asks for: the file `VGPU_HOST_KEY_FILE` names (read once per process),
/// or none.
fn host_key() -> Result<Option<transport::StreamKey>, String> {
    static KEY: std::sync::OnceLock<Result<Option<transport::StreamKey>, String>> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| match std::env::var_os("VGPU_HOST_KEY_FILE") {
        None => Ok(None),
        Some(path) => transport::StreamKey::from_file(std::path::Path::new(&path))
            .map(Some)
            .map_err(|e| e.to_string()),
    })
    .clone()
}

/// The TLS settings `VGPU_TLS_*` name, read once per process (at the first TCP connection).
fn tls_settings(security: &config::TcpSecurity) -> Result<transport::TlsClientConfig, String> {
    static TLS: std::sync::OnceLock<Result<transport::TlsClientConfig, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| match security {
        config::TcpSecurity::Tls {
            ca,
            cert,
            key,
            server_name,
        } => {
            transport::TlsClientConfig::load(ca, cert, key, server_name).map_err(|e| e.to_string())
        }
        config::TcpSecurity::Cleartext => Err("clear text has no TLS settings".to_owned()),
    })
    .clone()
}

/// Whether the host went away mid-session (every later call fails with [`HOST_GONE`]).
pub(crate) fn host_lost() -> bool {
    // No ordering needed: see `transport_failure`.
    HOST_LOST.load(Ordering::Relaxed)
}

fn transport_failure(e: &TransportError) -> CuError {
    if let TransportError::Refused(why) = e {
        // The host turned this thread's channel down (its first call): the host is fine, and the
        // process's other threads go on. The next call tries a new channel.
        log!(
            Level::Error,
            "the vgpu host refused this thread's channel: {why}"
        );
        return match why {
            Refusal::Limit => CuError::OUT_OF_MEMORY,
            Refusal::UnknownIdentity => CuError::NOT_INITIALIZED,
        };
    }
    if let TransportError::MessageTooLarge(len) = e {
        // Refused before anything was sent: the host is fine, this call is not.
        log!(
            Level::Error,
            "a call of {len} bytes exceeds the transport's limit of {} bytes; it fails with CUDA_ERROR_INVALID_VALUE",
            transport::MAX_MESSAGE_LEN
        );
        return CuError::INVALID_VALUE;
    }
    // No ordering needed: a flag read by later calls; the log line is deduplicated by it.
    if !HOST_LOST.swap(true, Ordering::Relaxed) {
        log!(
            Level::Error,
            "lost the vgpu host ({e}); CUDA calls now return CUDA_ERROR_DEVICE_UNAVAILABLE"
        );
    }
    HOST_GONE
}

/// Runs `body` with this thread's channel, opening it first if needed.
///
/// # Errors
/// `CUDA_ERROR_NOT_INITIALIZED` when the host cannot be reached, [`HOST_GONE`] after it was lost,
/// or whatever `body` returns.
pub fn with_channel<R>(body: impl FnOnce(&mut ThreadChannel) -> CuResult<R>) -> CuResult<R> {
    // No ordering needed: see `transport_failure`.
    if HOST_LOST.load(Ordering::Relaxed) {
        return Err(HOST_GONE);
    }
    let mut body = Some(body);
    let stored = CHANNEL.try_with(|cell| {
        let body = body.take().expect("runs once");
        let mut slot = cell.try_borrow_mut().map_err(|_| {
            log!(
                Level::Error,
                "a CUDA call was made re-entrantly on one thread"
            );
            CuError::UNKNOWN
        })?;
        if slot.as_ref().is_some_and(|c| c.pid != std::process::id()) {
            // A forked child: the channel is the parent's. Forget it without releasing it.
            std::mem::forget(slot.take());
        }
        if slot.is_none() {
            *slot = Some(open()?);
        }
        let channel = slot.as_mut().expect("opened above");
        body(channel)
    });
    match stored {
        Ok(result) => result,
        // This thread's storage is gone: a call from an exit handler (cudart releases its primary
        // contexts from one) or from another library's thread-local destructor. Such a call gets
        // a channel of its own, released when it returns.
        Err(_) => {
            let body = body.take().expect("not run yet");
            let mut channel = open()?;
            body(&mut channel)
        }
    }
}
