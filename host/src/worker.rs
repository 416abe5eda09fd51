//! One client's worker process: serves every channel of one guest process, one OS thread per
//! channel, and exits when that process is gone.
//!
//! Exit rules (see `docs/host.md`):
//! - **Same kernel** (the client's pid and start time name a process we can see): the worker
//!   watches it through a pidfd and exits the moment it exits. Channels closing is not a
//!   reason: a guest process may hold contexts and memory with no thread calling.
//! - **Across a VM** (the pid means nothing here): the worker exits once every channel it
//!   served ended with `PeerGone` (the transport's heartbeat timeout) and no new channel arrived
//!   for one peer timeout. Channels that closed normally keep it alive.
//! - **Over TCP** (the client's connections were handed over by the supervisor): the worker
//!   exits once its last connection has closed and none arrived for the grace period
//!   (`--tcp-grace-ms`). TCP keepalive bounds a peer that vanished without closing.
//! - **Supervisor gone** (end of file on stdin): the worker exits.
//!
//! Exiting releases everything the client held on the GPU: the driver frees a process's
//! contexts, memory, modules, streams and events when the process ends.

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Decoder, RequestHeader};
use transport::{
    Credential, Refusal, Region, ServerTransport, StreamHello, StreamIo, TransportError,
};

use crate::accounting::{CountersHome, DirectoryView};
use crate::cli::WorkerArgs;
use crate::dispatch::{ClientContext, Flow, ThreadSession};
use crate::liveness::{self, ProcessWatch};
use crate::stream_link::{self, Connection, LinkError};
use crate::worker_link::{ClientId, Record, Via};

/// Exit status of a worker whose channel handler panicked.
pub const EXIT_HANDLER_PANIC: i32 = 70;

/// The line a spare worker prints on stdout once the driver is loaded and initialised.
pub const WARM_LINE: &str = "warm";

enum Event {
    Record(Record),
    /// A TCP connection handed over on the link, and its socket.
    Stream(Connection, OwnedFd),
    SupervisorGone,
    ChannelEnded {
        index: u32,
        peer_gone: bool,
    },
    ClientExited,
}

/// The process name (`comm`) of a worker: `vgpuw-PID` with the guest pid, or `vgpuw-spare`.
/// Operators (and the tests) find a client's worker by it.
pub fn process_name(client_pid: Option<u32>) -> String {
    match client_pid {
        Some(pid) => format!("vgpuw-{pid}"),
        None => "vgpuw-spare".to_owned(),
    }
}

fn set_process_name(name: &str) {
    let mut bytes = [0u8; 16];
    let n = name.len().min(15);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from a valid
    // buffer; `bytes` is one, zero-padded.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Runs a worker until its client is gone; returns the exit status.
pub fn run(args: &WorkerArgs) -> i32 {
    set_process_name(&process_name(args.client_id.map(|_| args.pid)));
    let region = match args.region.as_deref().map(Region::open) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            // A region a guest broke (truncated, say) must not stop the host's socket clients
            // from being served: this worker serves without it.
            let path = args.region.as_deref().unwrap_or(std::path::Path::new(""));
            tracing::warn!(
                region = %path.display(),
                "worker cannot open the region ({e}); it serves socket clients only"
            );
            None
        }
    };
    let context = ClientContext::with_counters(
        args.driver.clone(),
        crate::dispatch::quota::Limits {
            memory_bytes: args.client_memory_mib.saturating_mul(1 << 20),
            contexts: args.client_contexts,
        },
        counters_home(args.stats_fd),
    );
    if args.prewarm {
        if let Err(e) = context.prewarm(args.context_pool) {
            tracing::error!("spare worker cannot initialise the driver: {e}");
            return crate::driver_check::EXIT_NO_DRIVER;
        }
    }
    let directory = directory_view(args.directory_fd);
    let (tx, rx) = mpsc::channel();
    spawn_stdin_reader(tx.clone());
    if let Some(fd) = args.link_fd {
        // SAFETY: F_GETFD only inspects the descriptor table entry.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            tracing::error!("--link-fd {fd} is not an open descriptor");
            return 1;
        }
        // SAFETY: the descriptor is open (checked above) and the supervisor passed it to us
        // (`--link-fd`) for this use only; nothing else in this process owns it.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        spawn_link_reader(link, tx.clone());
    }
    if args.prewarm {
        // The supervisor stops reading once it has handed this spare a client, which may
        // happen before the driver is warm: a closed pipe here is not a reason to stop.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{WARM_LINE}").and_then(|()| out.flush());
        detach_stdout();
    }
    let mut early = Vec::new();
    let client = match args.client_id {
        Some(id) => ClientId {
            id,
            pid: args.pid,
            start_time: args.start_time,
            via: if args.tcp_client {
                Via::Stream
            } else {
                Via::Region
            },
        },
        None => match wait_for_client(&rx, &mut early) {
            Some(c) => c,
            None => return 0,
        },
    };
    set_process_name(&process_name(Some(client.pid)));
    if let (Some(region), Via::Region) = (&region, client.via) {
        context.attach_region(region.clone(), client.id);
    }
    // The region's process list is for region clients only (one tenant); another client's
    // worker drops its mapping before it serves anything.
    context.attach_tenant(crate::dispatch::processes::Tenant {
        pid: client.pid,
        directory: directory.filter(|_| client.via == Via::Region),
    });
    // Every line this worker logs from here names its client (fields of the journal, with
    // `tracing-journald`: CLIENT, REGION, PID).
    let span = client_span(&client, args.region.as_deref());
    let _entered = span.clone().entered();
    tracing::debug!(
        client_id = client.id,
        pid = client.pid,
        "worker {} serving client",
        std::process::id()
    );
    Worker {
        region,
        client,
        context,
        events: tx,
        tcp_grace: Duration::from_millis(args.tcp_grace_ms),
        max_connections: args.max_connections,
        span,
        published: None,
    }
    .serve(&rx, early)
}

/// The span every log line of a client's worker is made in: its token, region and pid.
fn client_span(client: &ClientId, region: Option<&std::path::Path>) -> tracing::Span {
    let region = match (client.via, region) {
        (Via::Region, Some(path)) => path.display().to_string(),
        _ => "-".to_owned(),
    };
    tracing::info_span!(
        "client",
        client = %client.shown(),
        region = %region,
        pid = client.pid
    )
}

/// Where this worker counts: the block the supervisor handed over (`--stats-fd`), or its own
/// memory when there is none or it cannot be mapped (then nobody reads the counters).
fn counters_home(fd: Option<i32>) -> CountersHome {
    let Some(fd) = fd else {
        return CountersHome::own();
    };
    // SAFETY: F_GETFD only inspects the descriptor table entry.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        tracing::warn!("--stats-fd {fd} is not an open descriptor; counting privately");
        return CountersHome::own();
    }
    // SAFETY: the descriptor is open (checked above) and the supervisor passed it to us
    // (`--stats-fd`) for this use only; nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    CountersHome::from_fd(owned).unwrap_or_else(|e| {
        tracing::warn!("{e}; counting privately");
        CountersHome::own()
    })
}

/// The region's process list the supervisor handed over (`--directory-fd`), if any.
fn directory_view(fd: Option<i32>) -> Option<DirectoryView> {
    let fd = fd?;
    // SAFETY: F_GETFD only inspects the descriptor table entry.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        tracing::warn!("--directory-fd {fd} is not an open descriptor");
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and the supervisor passed it to us
    // (`--directory-fd`) for this use only; nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    DirectoryView::from_fd(owned)
        .inspect_err(|e| tracing::warn!("no process list: {e}"))
        .ok()
}

/// How often the main loop publishes its client's gauges.
const GAUGES_EVERY: Duration = Duration::from_millis(100);

/// Points stdout at /dev/null: nobody reads the spare's pipe after the warm line, and a
/// library that prints must neither block on a full pipe nor fail on a closed one.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are valid; dup2 atomically replaces fd 1.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

fn spawn_stdin_reader(tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("vgpu-supervisor-link".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => match Record::parse(&line) {
                        // The key is this worker's for its life; it travels no further.
                        Ok(Record::Seal(key)) => crate::dispatch::ipc_seal::set_key(key),
                        Ok(r) => {
                            if tx.send(Event::Record(r)).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("{e}"),
                    },
                }
            }
            let _ = tx.send(Event::SupervisorGone);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the supervisor link thread: {e}");
        std::process::exit(1);
    }
}

/// Reads connections from the supervisor's link until it closes. A bad message costs one log
/// line (its descriptors are closed); a failing link ends the thread (stdin still tells when
/// the supervisor is gone).
fn spawn_link_reader(link: OwnedFd, tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("vgpu-conn-link".into())
        .spawn(move || loop {
            match stream_link::recv(link.as_fd()) {
                Ok(Some((connection, fd))) => {
                    if tx.send(Event::Stream(connection, fd)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(LinkError::Io(e)) => {
                    tracing::error!("connection link failed: {e}");
                    return;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the connection link thread: {e}");
        std::process::exit(1);
    }
}

/// A spare waits for its client. Connections that arrive first (the link and stdin are read
/// by different threads) are kept in `early` and served once the client is known.
fn wait_for_client(
    rx: &Receiver<Event>,
    early: &mut Vec<(Connection, OwnedFd)>,
) -> Option<ClientId> {
    loop {
        match rx.recv().ok()? {
            Event::Record(Record::Client(c)) => return Some(c),
            // Taken by the stdin reader; never forwarded.
            Event::Record(Record::Seal(_)) => {}
            Event::Stream(connection, fd) => early.push((connection, fd)),
            Event::Record(Record::Claim(c, _)) => {
                tracing::warn!(
                    index = c.index,
                    "spare worker got a claim before its client"
                )
            }
            Event::SupervisorGone => return None,
            Event::ChannelEnded { .. } | Event::ClientExited => {}
        }
    }
}

struct Worker {
    region: Option<Region>,
    client: ClientId,
    context: Arc<ClientContext>,
    events: Sender<Event>,
    tcp_grace: Duration,
    /// Channels and connections the client may hold at once (`--max-connections`).
    max_connections: usize,
    /// The client's log span, entered by every thread of this worker.
    span: tracing::Span,
    /// When the gauges were last published.
    published: Option<Instant>,
}

impl Worker {
    /// Publishes the client's gauges (`accounting/`) when [`GAUGES_EVERY`] has passed.
    fn publish_gauges(&mut self, threads: usize) {
        let now = Instant::now();
        if self.published.is_some_and(|t| now - t < GAUGES_EVERY) {
            return;
        }
        self.published = Some(now);
        let gauges = self.context.gauges(threads as u64);
        self.context.counters().publish(&gauges);
    }

    fn serve(mut self, rx: &Receiver<Event>, early: Vec<(Connection, OwnedFd)>) -> i32 {
        let tcp = self.client.via == Via::Stream;
        let same_kernel = !tcp && liveness::same_kernel(self.client.pid, self.client.start_time);
        if same_kernel {
            self.watch_client();
        } else if !tcp {
            tracing::info!(
                pid = self.client.pid,
                "client pid not visible here (guest in a VM?): relying on transport liveness"
            );
        }
        let peer_timeout = self
            .region
            .as_ref()
            .map_or(transport::DEFAULT_PEER_TIMEOUT, Region::peer_timeout);
        let mut active = 0usize;
        let mut any_gone = false;
        let mut idle_since = Instant::now();
        let mut next_stream = 0u32;
        for (connection, fd) in early {
            if self.start_stream(connection, fd, active, &mut next_stream) {
                active += 1;
            }
        }
        loop {
            self.publish_gauges(active);
            match rx.recv_timeout(liveness::POLL_EVERY) {
                Ok(Event::Stream(connection, fd)) => {
                    if self.start_stream(connection, fd, active, &mut next_stream) {
                        active += 1;
                    }
                }
                Ok(Event::Record(Record::Claim(claim, credential))) => {
                    if claim.client_id != self.client.id {
                        tracing::warn!(
                            index = claim.index,
                            "claim of another client sent to this worker; ignored"
                        );
                        continue;
                    }
                    if self.start_channel(claim, credential, active) {
                        active += 1;
                    }
                }
                Ok(Event::Record(Record::Client(_))) => {
                    tracing::warn!("worker already serves a client; record ignored")
                }
                // Taken by the stdin reader; never forwarded.
                Ok(Event::Record(Record::Seal(_))) => {}
                Ok(Event::ChannelEnded { index, peer_gone }) => {
                    tracing::debug!(index, peer_gone, "channel ended");
                    active = active.saturating_sub(1);
                    any_gone |= peer_gone;
                    idle_since = Instant::now();
                }
                Ok(Event::ClientExited) => {
                    tracing::info!(pid = self.client.pid, "client exited; worker exits");
                    return 0;
                }
                Ok(Event::SupervisorGone) | Err(RecvTimeoutError::Disconnected) => {
                    tracing::info!("supervisor gone; worker exits");
                    return 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(Err(e)) = self.region.as_ref().map(Region::check_mapped) {
                tracing::warn!(
                    pid = self.client.pid,
                    "{e}: a guest shrank the region file; worker exits"
                );
                return 0;
            }
            if tcp && active == 0 && idle_since.elapsed() >= self.tcp_grace {
                tracing::info!(
                    pid = self.client.pid,
                    "last tcp connection closed {:?} ago; worker exits",
                    self.tcp_grace
                );
                return 0;
            }
            if !tcp
                && !same_kernel
                && active == 0
                && any_gone
                && idle_since.elapsed() >= peer_timeout
            {
                tracing::info!(
                    pid = self.client.pid,
                    "client silent for the peer timeout; worker exits"
                );
                return 0;
            }
        }
    }

    fn watch_client(&self) {
        let watch = ProcessWatch::new(self.client.pid, self.client.start_time);
        let tx = self.events.clone();
        let spawned = std::thread::Builder::new()
            .name("vgpu-client-watch".into())
            .spawn(move || {
                watch.wait_exit();
                let _ = tx.send(Event::ClientExited);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the client watch thread: {e}");
            std::process::exit(1);
        }
    }

    /// Grants one claim (with the new client's credential on its first) and serves it on a new
    /// thread; refuses it when the client already holds `--max-connections` channels and
    /// connections. False when refused, stale, or no thread starts.
    fn start_channel(
        &self,
        claim: transport::ChannelClaim,
        credential: Option<Credential>,
        active: usize,
    ) -> bool {
        let Some(region) = &self.region else {
            tracing::warn!(
                index = claim.index,
                "claim sent to a worker without a region"
            );
            return false;
        };
        if active >= self.max_connections {
            tracing::warn!(
                index = claim.index,
                tid = claim.tid,
                "channel refused: the client holds {active} channels and connections already (--max-connections-per-client)"
            );
            if let Err(e) = region.refuse(&claim, Refusal::Limit) {
                tracing::debug!(index = claim.index, "refusal not delivered: {e}");
            }
            return false;
        }
        if let Err(e) = region.grant(&claim, credential.as_ref()) {
            tracing::debug!(index = claim.index, "claim not granted: {e}");
            return false;
        }
        let channel = match region.serve(&claim) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(index = claim.index, "claim not served: {e}");
                return false;
            }
        };
        self.start_thread(channel, claim.index, format!("vgpu-ch-{}", claim.index))
    }

    /// Serves one TCP connection on a new thread, like a claimed channel; false when it is
    /// not this worker's client or no thread starts (the socket is then closed).
    fn start_stream(
        &self,
        connection: Connection,
        fd: OwnedFd,
        active: usize,
        next: &mut u32,
    ) -> bool {
        if self.client.via != Via::Stream || connection.client.client_id != self.client.id {
            tracing::warn!(
                peer = %connection.peer,
                "connection of another client sent to this worker; closed"
            );
            return false;
        }
        let hello = transport::Hello {
            pid: connection.client.pid,
            tid: connection.client.tid,
            presented: None,
        };
        let socket = TcpStream::from(fd);
        match connection.session.clone() {
            Some(keys) => {
                let session = transport::TlsStream::resume(socket, keys);
                self.admit_and_serve(
                    StreamHello::resume(session, hello),
                    &connection,
                    active,
                    next,
                )
            }
            None => self.admit_and_serve(
                StreamHello::resume(socket, hello),
                &connection,
                active,
                next,
            ),
        }
    }

    /// Sends `pending` its admission (or a refusal past `--max-connections-per-client`) and
    /// serves it on a new thread; false when it was refused or no thread starts.
    fn admit_and_serve<S: StreamIo + Send + 'static>(
        &self,
        pending: StreamHello<S>,
        connection: &Connection,
        active: usize,
        next: &mut u32,
    ) -> bool {
        if active >= self.max_connections {
            tracing::warn!(
                peer = %connection.peer,
                tid = connection.client.tid,
                "tcp connection refused: the client holds {active} channels and connections already (--max-connections-per-client)"
            );
            if let Err(e) = pending.refuse(Refusal::Limit) {
                tracing::debug!(peer = %connection.peer, "refusal not delivered: {e}");
            }
            return false;
        }
        let server = match pending.admit(self.client.id, connection.credential.as_ref()) {
            Ok(server) => server,
            Err(e) => {
                tracing::debug!(peer = %connection.peer, "admission not delivered: {e}");
                return false;
            }
        };
        let index = *next;
        *next = next.wrapping_add(1);
        tracing::debug!(peer = %connection.peer, tid = connection.client.tid, index, "serving tcp connection");
        self.start_thread(server, index, format!("vgpu-tcp-{index}"))
    }

    /// Runs [`serve_channel`] on a new thread named `name`; reports its end as `index`.
    fn start_thread<T: ServerTransport + Send + 'static>(
        &self,
        channel: T,
        index: u32,
        name: String,
    ) -> bool {
        let context = self.context.clone();
        let tx = self.events.clone();
        let span = self.span.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _entered = span.entered();
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| serve_channel(channel, context)));
            let peer_gone = match result {
                Ok(Ok(())) | Ok(Err(TransportError::Closed)) => false,
                Ok(Err(TransportError::PeerGone(reason))) => {
                    tracing::debug!(index, "client gone: {reason:?}");
                    true
                }
                Ok(Err(e)) => {
                    tracing::warn!(index, "channel ended: {e}");
                    false
                }
                Err(_) => {
                    tracing::error!(index, "request handler panicked; worker exits");
                    std::process::exit(EXIT_HANDLER_PANIC);
                }
            };
            let _ = tx.send(Event::ChannelEnded { index, peer_gone });
        });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(index, "cannot start a channel thread: {e}");
                false
            }
        }
    }
}

/// The per-channel loop: receive a request, run it, reply (nothing for a posted call), until
/// the guest thread says goodbye or goes away.
///
/// # Errors
///
/// The transport error that ended the channel (`Closed` for a normal release).
pub fn serve_channel(
    mut channel: impl ServerTransport,
    client: Arc<ClientContext>,
) -> Result<(), TransportError> {
    let mut session = ThreadSession::new(client.clone());
    let counters = client.counters();
    let mut request = Vec::new();
    let mut response = Vec::new();
    loop {
        channel.recv(&mut request)?;
        // Posted driver calls are only counted; answered ones are timed up to their reply.
        let (function, posted) = RequestHeader::read(&mut Decoder::new(&request))
            .map_or((false, false), |h| (h.call.is_function(), h.posted()));
        let started = (function && !posted).then(Instant::now);
        response.clear();
        let flow = session.handle(&request, &mut response);
        if flow != Flow::Posted {
            channel.reply(&response)?;
        }
        match (flow, function) {
            (Flow::Posted, _) => counters.posted(),
            (_, true) => counters.answered(started.map_or(Duration::ZERO, |t| t.elapsed())),
            (_, false) => counters.special(),
        }
        if flow == Flow::Close {
            return Ok(());
        }
    }
}
