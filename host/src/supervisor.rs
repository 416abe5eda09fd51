//! The main process: takes channel claims (from the region) and socket connections (from the
//! listeners), runs one worker process per guest process, reaps workers and frees what a dead
//! client left in the region.
//!
//! Claims and connections arrive on one queue ([`Intake`]): a thread accepts claims, one thread
//! per listener accepts connections, and the loop here routes each to its client's worker.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use transport::{
    ChannelClaim, Credential, GoneReason, Refusal, Region, StreamClients, StreamHello,
    TransportError,
};

use crate::accounting::{CountersView, DirectoryWriter};
use crate::listener::Accepted;
use crate::reporting::{Listing, Member, Roster};
use crate::stream_link::{self, Connection};
use crate::worker_link::{ClientId, Record, Via, SEAL_KEY_LEN};

/// How long one `accept` waits before the loop looks at signals and children again.
const ACCEPT_SLICE: Duration = Duration::from_millis(50);
/// How long workers get to end after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long after a spare worker died, or could not be started, the next one is started.
const SPARE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often, during [`STOP_GRACE`], the supervisor looks whether a worker has exited.
const STOP_POLL: Duration = Duration::from_millis(10);
/// Spare workers that die before serving, in a row, before pre-warming is given up.
const SPARE_FAILURES_MAX: u32 = 3;

/// Something to route to a client's worker.
#[derive(Debug)]
pub enum Intake {
    /// A channel claimed in the region.
    Claim(ChannelClaim),
    /// A socket connection whose handshake is done.
    Stream(Accepted),
}

/// What the supervisor needs to start workers.
#[derive(Debug, Clone)]
pub struct WorkerSpawn {
    /// This executable (re-executed with the hidden `worker` mode).
    pub exe: PathBuf,
    /// Region path (none when serving sockets only).
    pub region: Option<PathBuf>,
    /// Driver path.
    pub driver: PathBuf,
    /// Log filter handed to workers.
    pub log: String,
    /// Contexts a spare creates ahead.
    pub context_pool: u32,
    /// When the host listens for sockets: how long a socket client's worker outlives its last
    /// connection. Workers then get a connection link (`stream_link.rs`).
    pub stream_grace: Option<Duration>,
    /// At most this many client workers at once (`--max-clients`); new clients beyond it are
    /// refused.
    pub max_clients: usize,
    /// At most this many of them clients of the region (`--max-clients-per-region`).
    pub max_clients_per_region: usize,
    /// At most this many of them clients of one listener (`--max-clients-per-listener`).
    pub max_clients_per_listener: usize,
    /// Channels and connections one client may hold at once (`--max-connections-per-client`,
    /// enforced by its worker).
    pub max_connections_per_client: usize,
    /// Each client's device-memory quota in MiB (`--client-memory-mib`, 0: none).
    pub client_memory_mib: u64,
    /// Each client's context quota (`--client-contexts`, 0: none).
    pub client_contexts: usize,
}

struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    /// The supervisor's end of the connection link (when listening).
    link: Option<OwnedFd>,
    client: Option<ClientId>,
    /// The worker's counters, read-only (`accounting/`).
    counters: Option<Arc<CountersView>>,
    /// When it took its client.
    since: Instant,
    /// Where its client's first connection came from (socket clients).
    peer: Option<IpAddr>,
}

impl WorkerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, record: &Record) -> std::io::Result<()> {
        self.stdin.write_all(record.to_line().as_bytes())?;
        self.stdin.flush()
    }

    fn send_stream(
        &self,
        accepted: &Accepted,
        client_id: u64,
        credential: Option<&Credential>,
    ) -> std::io::Result<()> {
        let link = self.link.as_ref().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "worker has no link")
        })?;
        let connection = Connection {
            client: transport::ClientIdentity {
                client_id,
                pid: accepted.hello.pid,
                tid: accepted.hello.tid,
            },
            credential: credential.copied(),
            peer: accepted.peer,
            session: accepted.session.clone(),
        };
        stream_link::send(link.as_fd(), &connection, accepted.stream.as_fd())
    }
}

/// Where a client's identity was minted: ids are looked up only among clients of the same
/// origin (the region, or one listener), never across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    Region,
    Listener(SocketAddr),
}

/// Workers by client.
type ClientKey = (Origin, u64);

/// The spare: a worker with the driver loaded and initialised, waiting for a client.
struct Spare {
    worker: WorkerProcess,
    stdout: Option<BufReader<ChildStdout>>,
    warm: bool,
}

/// The serving loop's state.
pub struct Supervisor {
    region: Option<Region>,
    intake: Receiver<Intake>,
    intake_tx: Sender<Intake>,
    spawn: WorkerSpawn,
    workers: HashMap<ClientKey, WorkerProcess>,
    spare: Option<Spare>,
    prewarm: bool,
    spare_failures: u32,
    spare_retry_at: Instant,
    /// What the endpoints read (`reporting/`), replaced after every turn of the loop.
    roster: Arc<Roster>,
    /// New clients refused (`--max-clients`).
    refused: u64,
    /// The region's clients and their memory, for the workers (`accounting/directory.rs`).
    directory: Option<DirectoryWriter>,
    /// The identities each listener minted (the region keeps its own, `Region::admit`).
    listeners: HashMap<SocketAddr, StreamClients>,
    /// The key every worker seals CUDA IPC handles with (`dispatch/ipc_seal.rs`), drawn once;
    /// `None` when the kernel's random source failed (workers then refuse IPC).
    seal_key: Option<[u8; SEAL_KEY_LEN]>,
}

impl Supervisor {
    /// A supervisor for a created region (if any); listeners feed it through
    /// [`Supervisor::intake`].
    pub fn new(region: Option<Region>, spawn: WorkerSpawn, prewarm: bool) -> Self {
        let (intake_tx, intake) = mpsc::channel();
        let directory = region.as_ref().and_then(|_| {
            DirectoryWriter::create(spawn.max_clients)
                .inspect_err(|e| tracing::warn!("no process list for the guests' NVML: {e}"))
                .ok()
        });
        Self {
            region,
            intake,
            intake_tx,
            spawn,
            workers: HashMap::new(),
            spare: None,
            prewarm,
            spare_failures: 0,
            spare_retry_at: Instant::now(),
            roster: Arc::default(),
            refused: 0,
            directory,
            listeners: HashMap::new(),
            seal_key: transport::random_bytes()
                .inspect_err(|e| tracing::error!("no key for CUDA IPC handles: {e}"))
                .ok(),
        }
    }

    /// What the metrics and control endpoints read: this supervisor's workers and their
    /// counters.
    pub fn roster(&self) -> Arc<Roster> {
        self.roster.clone()
    }

    /// Replaces the roster with the workers as they are now, and the region's process list.
    fn publish_roster(&self) {
        if let Some(directory) = &self.directory {
            let mut rows: Vec<(u32, u64)> = self
                .workers
                .values()
                .filter(|w| w.client.is_some_and(|c| c.via == Via::Region))
                .filter_map(|w| {
                    let memory = w.counters.as_ref()?.snapshot()?.gauges.memory_bytes;
                    Some((w.client?.pid, memory))
                })
                .collect();
            rows.sort_unstable();
            directory.publish(&rows);
        }
        let members = self
            .workers
            .values()
            .filter_map(|w| {
                Some(Member {
                    client: w.client?,
                    worker_pid: w.pid(),
                    since: w.since,
                    peer: w.peer,
                    counters: w.counters.clone(),
                })
            })
            .collect();
        self.roster.replace(Listing {
            members,
            spares: u64::from(self.spare.is_some()),
            refused: self.refused,
        });
    }

    /// Starts the first spare (when pre-warming) and waits up to `bound` for it to be warm, so
    /// that the first client finds an initialised driver. Returns whether it is warm.
    pub fn warm_up(&mut self, bound: Duration) -> bool {
        if !self.prewarm {
            return false;
        }
        self.ensure_spare();
        let Some(spare) = self.spare.as_mut() else {
            return false;
        };
        let warm = wait_warm(spare, bound);
        spare.warm = warm;
        if !warm {
            tracing::warn!("spare worker not warm after {bound:?}; serving anyway");
        }
        warm
    }

    /// Where listeners deliver handshaken connections.
    pub fn intake(&self) -> Sender<Intake> {
        self.intake_tx.clone()
    }

    /// Serves until SIGTERM/SIGINT; then stops every worker. Returns the stop signal.
    pub fn run(&mut self) -> i32 {
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(region) = &self.region {
            spawn_claim_acceptor(region.clone(), self.intake_tx.clone(), stop.clone());
        }
        let signal = loop {
            if let Some(s) = crate::signals::stop_requested() {
                break s;
            }
            self.reap();
            self.ensure_spare();
            self.publish_roster();
            match self.intake.recv_timeout(ACCEPT_SLICE) {
                Ok(Intake::Claim(claim)) => self.route(claim),
                Ok(Intake::Stream(accepted)) => self.route_stream(accepted),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        };
        self.roster.replace(Listing::default());
        // No ordering needed: the flag only ends the claim thread's loop.
        stop.store(true, Ordering::Relaxed);
        tracing::info!("signal {signal}: stopping {} worker(s)", self.workers.len());
        self.stop_all();
        signal
    }

    /// Decides who a claim belongs to (`Region::admit`: a new client, or a known one whose
    /// proof holds) and hands it to that client's worker, starting one (or promoting the spare)
    /// for a new client; the worker grants it. Anything else is refused in the region.
    fn route(&mut self, claim: ChannelClaim) {
        let Some(region) = self.region.clone() else {
            return;
        };
        let new = claim.presented_id == 0;
        if new && !self.has_room(Origin::Region, claim.pid) {
            refuse_claim(&region, &claim, Refusal::Limit);
            return;
        }
        let admitted = match region.admit(claim) {
            Ok(a) => a,
            Err(e) => {
                let why = match e {
                    TransportError::Refused(why) => why,
                    other => {
                        tracing::error!(index = claim.index, "cannot admit a claim: {other}");
                        Refusal::Limit
                    }
                };
                tracing::warn!(
                    index = claim.index,
                    pid = claim.pid,
                    presented = format_args!("{:016x}", claim.presented_id),
                    "claim refused: {why} (an id this region never minted, or a wrong proof)"
                );
                refuse_claim(&region, &claim, why);
                return;
            }
        };
        let claim = admitted.claim;
        let record = Record::Claim(claim, admitted.credential);
        let client = ClientId::of(&claim);
        match self.deliver(Origin::Region, client, "claim", |w| w.send(&record)) {
            Some(worker) => tracing::debug!(
                client = client.shown(),
                pid = client.pid,
                index = claim.index,
                tid = claim.tid,
                worker,
                "channel handed over"
            ),
            None => {
                if new {
                    region.forget(client.id);
                }
                refuse_claim(&region, &claim, Refusal::Limit);
            }
        }
    }

    /// Decides who a socket connection belongs to (by the credential it presents, among those
    /// its listener minted) and hands it to that client's worker, as [`Supervisor::route`] does
    /// a claim; the worker sends the admission. Then closes the supervisor's copy of the socket.
    fn route_stream(&mut self, accepted: Accepted) {
        let origin = Origin::Listener(accepted.listener);
        let presented = accepted.hello.presented;
        let (pid, peer) = (accepted.hello.pid, accepted.peer);
        if presented.is_none() && !self.has_room(origin, pid) {
            refuse_stream(accepted, Refusal::Limit);
            return;
        }
        let admitted = self
            .listeners
            .entry(accepted.listener)
            .or_default()
            .admit(presented.as_ref());
        let (id, credential) = match admitted {
            Ok(a) => a,
            Err(e) => {
                let why = match e {
                    TransportError::Refused(why) => why,
                    other => {
                        tracing::error!(%peer, "cannot admit a connection: {other}");
                        Refusal::Limit
                    }
                };
                tracing::warn!(
                    %peer,
                    pid,
                    "tcp connection refused: {why} (a credential this listener never minted)"
                );
                refuse_stream(accepted, why);
                return;
            }
        };
        let client = ClientId::of_stream(id, pid);
        let delivered = self.deliver(origin, client, "connection", |w| {
            w.send_stream(&accepted, id, credential.as_ref())
        });
        if let (Some(_), Some(w)) = (delivered, self.workers.get_mut(&(origin, id))) {
            w.peer.get_or_insert(peer.ip());
        }
        match delivered {
            Some(worker) => tracing::info!(
                client = client.shown(),
                %peer,
                pid = client.pid,
                tid = accepted.hello.tid,
                worker,
                tls = accepted.certificate.as_deref().unwrap_or("no (clear text)"),
                "tcp connection"
            ),
            None => {
                tracing::warn!(
                    client = client.shown(),
                    %peer,
                    pid = client.pid,
                    "tcp connection refused: no worker could take it"
                );
                if credential.is_some() {
                    self.forget(&(origin, id));
                }
                refuse_stream(accepted, Refusal::Limit);
            }
        }
    }

    /// Whether a new client of `origin` fits the limits (`--max-clients`, and
    /// `--max-clients-per-region` or `--max-clients-per-listener`); logs and counts a refusal.
    fn has_room(&mut self, origin: Origin, pid: u32) -> bool {
        let count = |workers: &HashMap<ClientKey, WorkerProcess>| {
            workers.keys().filter(|(o, _)| *o == origin).count()
        };
        let (limit, flag) = match origin {
            Origin::Region => (
                self.spawn.max_clients_per_region,
                "--max-clients-per-region",
            ),
            Origin::Listener(_) => (
                self.spawn.max_clients_per_listener,
                "--max-clients-per-listener",
            ),
        };
        if self.workers.len() >= self.spawn.max_clients || count(&self.workers) >= limit {
            self.reap();
        }
        let refusal = if self.workers.len() >= self.spawn.max_clients {
            Some((self.workers.len(), "--max-clients"))
        } else if count(&self.workers) >= limit {
            Some((count(&self.workers), flag))
        } else {
            None
        };
        match refusal {
            None => true,
            Some((n, flag)) => {
                self.refused += 1;
                tracing::warn!(
                    pid,
                    origin = ?origin,
                    "refusing a new client: {n} clients already ({flag})"
                );
                false
            }
        }
    }

    /// Forgets a client's identity where it was minted: its claims or connections are refused
    /// from now on (the guest comes back as a new client).
    fn forget(&mut self, key: &ClientKey) {
        match key.0 {
            Origin::Region => {
                if let Some(region) = &self.region {
                    region.forget(key.1);
                }
            }
            Origin::Listener(addr) => {
                if let Some(clients) = self.listeners.get(&addr) {
                    clients.forget(key.1);
                }
            }
        }
    }

    /// Runs `send` on the worker of `client`: the existing one, or the spare, or a new one
    /// (also when the existing one is gone). Returns the worker's pid when `send` succeeded.
    fn deliver(
        &mut self,
        origin: Origin,
        client: ClientId,
        what: &str,
        send: impl Fn(&mut WorkerProcess) -> std::io::Result<()>,
    ) -> Option<u32> {
        let key = (origin, client.id);
        if let Some(worker) = self.workers.get_mut(&key) {
            if send(worker).is_ok() {
                return Some(worker.pid());
            }
            tracing::warn!(
                client = client.shown(),
                pid = client.pid,
                "worker {} of this client is gone; starting a new one",
                worker.pid()
            );
            self.reap();
            if let Some(mut w) = self.workers.remove(&key) {
                finish(&mut w.child, self.region.as_ref(), w.client);
            }
        }
        if !self.has_room(origin, client.pid) {
            return None;
        }
        let mut worker = self
            .take_spare(client)
            .or_else(|| self.start_worker(client))?;
        let pid = worker.pid();
        let sent = send(&mut worker);
        if let Err(e) = &sent {
            tracing::error!(worker = pid, "cannot hand the {what} over: {e}");
        }
        tracing::info!(
            client = client.shown(),
            pid = client.pid,
            via = ?client.via,
            worker = pid,
            "new client"
        );
        self.workers.insert(key, worker);
        sent.ok().map(|()| pid)
    }

    fn take_spare(&mut self, client: ClientId) -> Option<WorkerProcess> {
        let mut spare = self.spare.take()?;
        if !matches!(spare.worker.child.try_wait(), Ok(None)) {
            self.spare_died(spare);
            return None;
        }
        if spare.worker.send(&Record::Client(client)).is_err() {
            self.spare_died(spare);
            return None;
        }
        spare.worker.client = Some(client);
        spare.worker.since = Instant::now();
        self.spare_failures = 0;
        Some(spare.worker)
    }

    fn spare_died(&mut self, mut spare: Spare) {
        let status = spare.worker.child.wait().ok();
        self.spare_failures += 1;
        self.spare_retry_at = Instant::now() + SPARE_RETRY_AFTER;
        tracing::warn!(
            "spare worker {} died ({}){}",
            spare.worker.pid(),
            describe(status),
            if self.spare_failures >= SPARE_FAILURES_MAX {
                "; giving up pre-warming"
            } else {
                ""
            }
        );
    }

    fn ensure_spare(&mut self) {
        if !self.prewarm
            || self.spare_failures >= SPARE_FAILURES_MAX
            || Instant::now() < self.spare_retry_at
        {
            return;
        }
        if let Some(spare) = self.spare.as_mut() {
            match spare.worker.child.try_wait() {
                Ok(None) => return,
                _ => {
                    if let Some(s) = self.spare.take() {
                        self.spare_died(s);
                    }
                    return;
                }
            }
        }
        let mut cmd = self.worker_command();
        cmd.arg("--prewarm")
            .arg("--context-pool")
            .arg(self.spawn.context_pool.to_string())
            .stdout(Stdio::piped());
        match self.spawn_worker(cmd) {
            Ok((worker, stdout)) => {
                tracing::debug!(worker = worker.pid(), "spare worker started");
                self.spare = Some(Spare {
                    worker,
                    stdout: stdout.map(BufReader::new),
                    warm: false,
                });
            }
            Err(e) => {
                self.spare_failures += 1;
                self.spare_retry_at = Instant::now() + SPARE_RETRY_AFTER;
                tracing::error!("cannot start a spare worker: {e}");
            }
        }
    }

    fn worker_command(&self) -> Command {
        let mut cmd = Command::new(&self.spawn.exe);
        cmd.arg("worker");
        if let Some(region) = &self.spawn.region {
            cmd.arg("--region").arg(region);
        }
        if let Some(grace) = self.spawn.stream_grace {
            cmd.arg("--tcp-grace-ms").arg(grace.as_millis().to_string());
        }
        if self.spawn.client_memory_mib != 0 {
            cmd.arg("--client-memory-mib")
                .arg(self.spawn.client_memory_mib.to_string());
        }
        cmd.arg("--max-connections")
            .arg(self.spawn.max_connections_per_client.to_string());
        if self.spawn.client_contexts != 0 {
            cmd.arg("--client-contexts")
                .arg(self.spawn.client_contexts.to_string());
        }
        cmd.arg("--driver")
            .arg(&self.spawn.driver)
            .arg("--log")
            .arg(&self.spawn.log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    fn start_worker(&mut self, client: ClientId) -> Option<WorkerProcess> {
        let mut cmd = self.worker_command();
        cmd.arg("--client-id")
            .arg(client.id.to_string())
            .arg("--pid")
            .arg(client.pid.to_string())
            .arg("--start-time")
            .arg(client.start_time.to_string());
        if client.via == Via::Stream {
            cmd.arg("--tcp-client");
        }
        match self.spawn_worker(cmd) {
            Ok((mut worker, _)) => {
                worker.client = Some(client);
                Some(worker)
            }
            Err(e) => {
                tracing::error!(pid = client.pid, "cannot start a worker: {e}");
                None
            }
        }
    }

    /// Collects exited workers; frees their clients' bulk blocks.
    fn reap(&mut self) {
        let exited: Vec<ClientKey> = self
            .workers
            .iter_mut()
            .filter_map(|(key, w)| (!matches!(w.child.try_wait(), Ok(None))).then_some(*key))
            .collect();
        for key in exited {
            if let Some(mut w) = self.workers.remove(&key) {
                finish(&mut w.child, self.region.as_ref(), w.client);
            }
            self.forget(&key);
        }
    }

    fn stop_all(&mut self) {
        let mut all: Vec<(Child, Option<ClientId>)> = self
            .workers
            .drain()
            .map(|(_, w)| (w.child, w.client))
            .collect();
        if let Some(s) = self.spare.take() {
            all.push((s.worker.child, None));
        }
        for (child, _) in &all {
            // SAFETY: kill with a pid of our own unreaped child (it cannot have been reused).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (child, client) in &mut all {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(STOP_POLL);
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            release_bulk(self.region.as_ref(), *client);
        }
    }

    /// Starts a worker process from `cmd`, with a connection link when listening.
    fn spawn_worker(
        &self,
        mut cmd: Command,
    ) -> std::io::Result<(WorkerProcess, Option<ChildStdout>)> {
        let mut worker_end = None;
        let mut link = None;
        let (counters, counters_fd) = match CountersView::create() {
            Ok((view, fd)) => (Some(Arc::new(view)), Some(fd)),
            Err(e) => {
                tracing::warn!("the new worker's counters are not shared: {e}");
                (None, None)
            }
        };
        if let Some(fd) = counters_fd.as_ref().map(AsRawFd::as_raw_fd) {
            cmd.arg("--stats-fd").arg(fd.to_string());
            // SAFETY: the closure runs in the forked child before exec and only calls fcntl
            // (async-signal-safe) on a descriptor that is open there (inherited from us, kept
            // open by `counters_fd` until spawn returns).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(fd) = self.directory.as_ref().map(|d| d.fd().as_raw_fd()) {
            cmd.arg("--directory-fd").arg(fd.to_string());
            // SAFETY: as for the counters block: fcntl in the forked child on a descriptor
            // open there (the supervisor keeps it open for its life).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if self.spawn.stream_grace.is_some() {
            let (ours, theirs) = stream_link::pair()?;
            let fd = theirs.as_raw_fd();
            cmd.arg("--link-fd").arg(fd.to_string());
            // SAFETY: the closure runs in the forked child before exec and only calls fcntl
            // (async-signal-safe) on a descriptor that is open there (inherited from us, kept
            // open by `worker_end` until spawn returns).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            worker_end = Some(theirs);
            link = Some(ours);
        }
        let spawned = cmd.spawn();
        drop(worker_end);
        drop(counters_fd);
        let mut child = spawned?;
        let stdin = child.stdin.take().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "worker has no stdin pipe")
        })?;
        let stdout = child.stdout.take();
        let mut worker = WorkerProcess {
            child,
            stdin,
            link,
            client: None,
            counters,
            since: Instant::now(),
            peer: None,
        };
        if let Some(key) = self.seal_key {
            // The first record, ahead of any client or claim.
            worker.send(&Record::Seal(key))?;
        }
        Ok((worker, stdout))
    }
}

/// Accepts region claims into the intake queue until `stop` is set or the loop is gone.
fn spawn_claim_acceptor(region: Region, intake: Sender<Intake>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("vgpu-claims".into())
        .spawn(move || {
            // No ordering needed: see `Supervisor::run`.
            while !stop.load(Ordering::Relaxed) {
                match region.accept(ACCEPT_SLICE) {
                    Ok(Some(claim)) => {
                        if intake.send(Intake::Claim(claim)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(TransportError::PeerGone(GoneReason::RegionTruncated)) => {
                        tracing::error!(
                            "the region file was shrunk under the host (a guest truncated it): \
                             its clients are gone and no new one is accepted; socket clients \
                             are served on; restart vgpu-host to serve the region again"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        std::thread::sleep(ACCEPT_SLICE);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the claim thread: {e}");
        std::process::exit(1);
    }
}

/// Frees the bulk blocks a region client left (socket clients own none).
fn release_bulk(region: Option<&Region>, client: Option<ClientId>) -> usize {
    match (region, client) {
        (Some(region), Some(c)) if c.via == Via::Region => region.bulk_release_owner(c.id),
        _ => 0,
    }
}

/// Tells a claimer it was refused (it frees the channel); a claim already gone needs nothing.
fn refuse_claim(region: &Region, claim: &ChannelClaim, why: Refusal) {
    if let Err(e) = region.refuse(claim, why) {
        tracing::debug!(index = claim.index, "refusal not delivered: {e}");
    }
}

/// Tells a socket client it was refused, then closes the connection.
fn refuse_stream(accepted: Accepted, why: Refusal) {
    let peer = accepted.peer;
    let sent = match accepted.session {
        // The refusal travels inside the TLS session the listener handshook.
        Some(keys) => StreamHello::resume(
            transport::TlsStream::resume(accepted.stream, keys),
            accepted.hello,
        )
        .refuse(why),
        None => StreamHello::resume(accepted.stream, accepted.hello).refuse(why),
    };
    if let Err(e) = sent {
        tracing::debug!(%peer, "refusal not delivered: {e}");
    }
}

/// Waits (bounded) for a spare's warm line.
fn wait_warm(spare: &mut Spare, bound: Duration) -> bool {
    let Some(out) = spare.stdout.as_mut() else {
        return false;
    };
    let mut p = libc::pollfd {
        fd: out.get_ref().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(bound.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd that lives across the call.
    if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
        return false;
    }
    let mut line = String::new();
    matches!(out.read_line(&mut line), Ok(n) if n > 0)
        && line.trim_end() == crate::worker::WARM_LINE
}

/// Logs how a worker ended and frees its client's bulk blocks.
fn finish(child: &mut Child, region: Option<&Region>, client: Option<ClientId>) {
    let status = child.wait().ok();
    let pid = client.map_or(0, |c| c.pid);
    let id = client.map_or_else(String::new, |c| c.shown());
    let crashed = status.is_none_or(|s| !s.success());
    if crashed {
        tracing::warn!(
            worker = child.id(),
            client = id,
            pid,
            "worker crashed ({}); its client's calls fail with PeerGone",
            describe(status)
        );
    } else {
        tracing::info!(worker = child.id(), client = id, pid, "worker exited");
    }
    let freed = release_bulk(region, client);
    if freed > 0 {
        tracing::info!(
            client = id,
            pid,
            "freed {freed} bulk block(s) of the client"
        );
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "status unknown".to_owned(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended".to_owned(),
        },
    }
}
