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
//! - **Supervisor gone** (end of file on stdin): the worker exits.
//!
//! Exiting releases everything the client held on the GPU: the driver frees a process's
//! contexts, memory, modules, streams and events when the process ends.

use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{HostChannel, Region, TransportError};

use crate::cli::WorkerArgs;
use crate::dispatch::{ClientContext, Flow, ThreadSession};
use crate::liveness::{self, ProcessWatch};
use crate::worker_link::{ClientId, Record};

/// Exit status of a worker whose channel handler panicked.
pub const EXIT_HANDLER_PANIC: i32 = 70;

/// The line a spare worker prints on stdout once the driver is loaded and initialised.
pub const WARM_LINE: &str = "warm";

enum Event {
    Record(Record),
    SupervisorGone,
    ChannelEnded { index: u32, peer_gone: bool },
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
    set_process_name(&process_name(args.client_token.map(|_| args.pid)));
    let region = match Region::open(&args.region) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(region = %args.region.display(), "worker cannot open the region: {e}");
            return 1;
        }
    };
    let context = ClientContext::new(args.driver.clone());
    if args.prewarm {
        if let Err(e) = context.prewarm(args.context_pool) {
            tracing::error!("spare worker cannot initialise the driver: {e}");
            return crate::driver_check::EXIT_NO_DRIVER;
        }
    }
    let (tx, rx) = mpsc::channel();
    spawn_stdin_reader(tx.clone());
    if args.prewarm {
        // The supervisor stops reading once it has handed this spare a client, which may
        // happen before the driver is warm: a closed pipe here is not a reason to stop.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{WARM_LINE}").and_then(|()| out.flush());
        detach_stdout();
    }
    let client = match args.client_token {
        Some(token) => ClientId {
            token,
            pid: args.pid,
            start_time: args.start_time,
        },
        None => match wait_for_client(&rx) {
            Some(c) => c,
            None => return 0,
        },
    };
    set_process_name(&process_name(Some(client.pid)));
    context.attach_region(region.clone(), client.token);
    tracing::debug!(
        token = client.token,
        pid = client.pid,
        "worker {} serving client",
        std::process::id()
    );
    Worker {
        region,
        client,
        context,
        events: tx,
    }
    .serve(&rx)
}

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

fn wait_for_client(rx: &Receiver<Event>) -> Option<ClientId> {
    loop {
        match rx.recv().ok()? {
            Event::Record(Record::Client(c)) => return Some(c),
            Event::Record(Record::Claim(c)) => {
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
    region: Region,
    client: ClientId,
    context: Arc<ClientContext>,
    events: Sender<Event>,
}

impl Worker {
    fn serve(self, rx: &Receiver<Event>) -> i32 {
        let same_kernel = liveness::same_kernel(self.client.pid, self.client.start_time);
        if same_kernel {
            self.watch_client();
        } else {
            tracing::info!(
                pid = self.client.pid,
                "client pid not visible here (guest in a VM?): relying on transport liveness"
            );
        }
        let peer_timeout = self.region.peer_timeout();
        let mut active = 0usize;
        let mut any_gone = false;
        let mut idle_since = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Record(Record::Claim(claim))) => {
                    if claim.client_token != self.client.token {
                        tracing::warn!(
                            index = claim.index,
                            "claim of another client sent to this worker; ignored"
                        );
                        continue;
                    }
                    if self.start_channel(claim) {
                        active += 1;
                    }
                }
                Ok(Event::Record(Record::Client(_))) => {
                    tracing::warn!("worker already serves a client; record ignored")
                }
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
            if !same_kernel && active == 0 && any_gone && idle_since.elapsed() >= peer_timeout {
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

    /// Serves one claim on a new thread; false when the claim is stale or no thread starts.
    fn start_channel(&self, claim: transport::ChannelClaim) -> bool {
        let channel = match self.region.serve(&claim) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(index = claim.index, "claim not served: {e}");
                return false;
            }
        };
        let context = self.context.clone();
        let tx = self.events.clone();
        let index = claim.index;
        let spawned = std::thread::Builder::new()
            .name(format!("vgpu-ch-{index}"))
            .spawn(move || {
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

/// The per-channel loop: receive a request, run it, reply, until the guest thread says goodbye
/// or goes away.
///
/// # Errors
///
/// The transport error that ended the channel (`Closed` for a normal release).
pub fn serve_channel(
    mut channel: HostChannel,
    client: Arc<ClientContext>,
) -> Result<(), TransportError> {
    let mut session = ThreadSession::new(client);
    let mut request = Vec::new();
    let mut response = Vec::new();
    loop {
        channel.recv(&mut request)?;
        response.clear();
        let flow = session.handle(&request, &mut response);
        channel.reply(&response)?;
        if flow == Flow::Close {
            return Ok(());
        }
    }
}
