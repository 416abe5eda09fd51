//! The main process: accepts channel claims, runs one worker process per guest process, reaps
//! workers and frees what a dead client left in the region.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use transport::{ChannelClaim, Region};

use crate::worker_link::{ClientId, Record};

/// How long one `accept` waits before the loop looks at signals and children again.
const ACCEPT_SLICE: Duration = Duration::from_millis(50);
/// How long workers get to end after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Spare workers that die before serving, in a row, before pre-warming is given up.
const SPARE_FAILURES_MAX: u32 = 3;

/// What the supervisor needs to start workers.
#[derive(Debug, Clone)]
pub struct WorkerSpawn {
    /// This executable (re-executed with the hidden `worker` mode).
    pub exe: PathBuf,
    /// Region path.
    pub region: PathBuf,
    /// Driver path.
    pub driver: PathBuf,
    /// Log filter handed to workers.
    pub log: String,
    /// Contexts a spare creates ahead.
    pub context_pool: u32,
}

struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    client: Option<ClientId>,
}

impl WorkerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, record: &Record) -> std::io::Result<()> {
        self.stdin.write_all(record.to_line().as_bytes())?;
        self.stdin.flush()
    }
}

/// The spare: a worker with the driver loaded and initialised, waiting for a client.
struct Spare {
    worker: WorkerProcess,
    stdout: Option<BufReader<ChildStdout>>,
    warm: bool,
}

/// The serving loop's state.
pub struct Supervisor {
    region: Region,
    spawn: WorkerSpawn,
    workers: HashMap<u64, WorkerProcess>,
    spare: Option<Spare>,
    prewarm: bool,
    spare_failures: u32,
    spare_retry_at: Instant,
}

impl Supervisor {
    /// A supervisor for a created region.
    pub fn new(region: Region, spawn: WorkerSpawn, prewarm: bool) -> Self {
        Self {
            region,
            spawn,
            workers: HashMap::new(),
            spare: None,
            prewarm,
            spare_failures: 0,
            spare_retry_at: Instant::now(),
        }
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

    /// Serves until SIGTERM/SIGINT; then stops every worker. Returns the stop signal.
    pub fn run(&mut self) -> i32 {
        let signal = loop {
            if let Some(s) = crate::signals::stop_requested() {
                break s;
            }
            self.reap();
            self.ensure_spare();
            match self.region.accept(ACCEPT_SLICE) {
                Ok(Some(claim)) => self.route(claim),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(ACCEPT_SLICE);
                }
            }
        };
        tracing::info!("signal {signal}: stopping {} worker(s)", self.workers.len());
        self.stop_all();
        signal
    }

    /// Hands a claim to its client's worker, starting one (or promoting the spare) for a new
    /// client.
    fn route(&mut self, claim: ChannelClaim) {
        let record = Record::Claim(claim);
        if let Some(worker) = self.workers.get_mut(&claim.client_token) {
            if worker.send(&record).is_ok() {
                tracing::debug!(
                    index = claim.index,
                    tid = claim.tid,
                    worker = worker.pid(),
                    "channel to existing worker"
                );
                return;
            }
            tracing::warn!(
                pid = claim.pid,
                "worker {} of this client is gone; starting a new one",
                worker.pid()
            );
            self.reap();
            if let Some(mut w) = self.workers.remove(&claim.client_token) {
                finish(&mut w.child, &self.region, w.client);
            }
        }
        let client = ClientId::of(&claim);
        let Some(mut worker) = self
            .take_spare(client)
            .or_else(|| self.start_worker(client))
        else {
            return;
        };
        if let Err(e) = worker.send(&record) {
            tracing::error!(worker = worker.pid(), "cannot hand the claim over: {e}");
        }
        tracing::info!(
            pid = client.pid,
            token = client.token,
            worker = worker.pid(),
            "new client"
        );
        self.workers.insert(client.token, worker);
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
        self.spare_failures = 0;
        Some(spare.worker)
    }

    fn spare_died(&mut self, mut spare: Spare) {
        let status = spare.worker.child.wait().ok();
        self.spare_failures += 1;
        self.spare_retry_at = Instant::now() + Duration::from_secs(1);
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
        match spawn(cmd) {
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
                self.spare_retry_at = Instant::now() + Duration::from_secs(1);
                tracing::error!("cannot start a spare worker: {e}");
            }
        }
    }

    fn worker_command(&self) -> Command {
        let mut cmd = Command::new(&self.spawn.exe);
        cmd.arg("worker")
            .arg("--region")
            .arg(&self.spawn.region)
            .arg("--driver")
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
        cmd.arg("--client-token")
            .arg(client.token.to_string())
            .arg("--pid")
            .arg(client.pid.to_string())
            .arg("--start-time")
            .arg(client.start_time.to_string());
        match spawn(cmd) {
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
        let exited: Vec<u64> = self
            .workers
            .iter_mut()
            .filter_map(|(token, w)| (!matches!(w.child.try_wait(), Ok(None))).then_some(*token))
            .collect();
        for token in exited {
            if let Some(mut w) = self.workers.remove(&token) {
                finish(&mut w.child, &self.region, w.client);
            }
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
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            if let Some(c) = client {
                self.region.bulk_release_owner(c.token);
            }
        }
    }
}

fn spawn(mut cmd: Command) -> std::io::Result<(WorkerProcess, Option<ChildStdout>)> {
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "worker has no stdin pipe")
    })?;
    let stdout = child.stdout.take();
    Ok((
        WorkerProcess {
            child,
            stdin,
            client: None,
        },
        stdout,
    ))
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
fn finish(child: &mut Child, region: &Region, client: Option<ClientId>) {
    let status = child.wait().ok();
    let pid = client.map_or(0, |c| c.pid);
    let crashed = status.is_none_or(|s| !s.success());
    if crashed {
        tracing::warn!(
            worker = child.id(),
            client = pid,
            "worker crashed ({}); its client's calls fail with PeerGone",
            describe(status)
        );
    } else {
        tracing::info!(worker = child.id(), client = pid, "worker exited");
    }
    if let Some(c) = client {
        let freed = region.bulk_release_owner(c.token);
        if freed > 0 {
            tracing::info!(client = pid, "freed {freed} bulk block(s) of the client");
        }
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
