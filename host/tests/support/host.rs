//! A running `vgpu-host` on a fake driver, and guest programs run against it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::compile::{built_shim, FakeDriver};
use super::procs::{one_child_named, signal};
use super::tmp;

/// How long a host may take to print its ready line.
const READY_BOUND: Duration = Duration::from_secs(15);

/// `vgpu-host`, not started: add arguments and run it to its end (one-shot error cases).
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgpu-host"))
}

/// A fresh region path in `/dev/shm`, unique in this process.
pub fn unique_region(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!(
        "/dev/shm/vgpu-hosttest-{tag}-{}-{n}",
        std::process::id()
    ))
}

/// How to start a [`Host`]: by default the plain fake driver on a fresh 8 MiB region with 8
/// channels.
#[derive(Debug)]
pub struct HostBuilder {
    driver: FakeDriver,
    region: Option<PathBuf>,
    region_size: u64,
    channels: u32,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    driver_log: Option<PathBuf>,
}

impl HostBuilder {
    /// Serves this fake driver instead of the plain one.
    pub fn driver(mut self, driver: FakeDriver) -> Self {
        self.driver = driver;
        self
    }

    /// Serves the region at `path` (which may exist already) instead of a fresh one.
    pub fn region_at(mut self, path: &Path) -> Self {
        self.region = Some(path.to_owned());
        self
    }

    /// `--region-size`.
    pub fn region_size(mut self, bytes: u64) -> Self {
        self.region_size = bytes;
        self
    }

    /// `--channels`.
    pub fn channels(mut self, count: u32) -> Self {
        self.channels = count;
        self
    }

    /// More command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the host (and so its workers and the fake driver).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Has the fake driver log its calls (`FAKE_CUDA_LOG`), read with [`Host::driver_log`].
    pub fn log_driver_calls(mut self) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = tmp(&format!(
            "fake-driver-{}.log",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&log);
        self.driver_log = Some(log);
        self
    }

    /// Starts the host and returns once it printed its ready line (`vgpu-host: serving …`,
    /// after the spare worker warmed up).
    pub fn start(self) -> Host {
        let mut cmd = command();
        cmd.arg("--driver").arg(self.driver.path());
        if let Some(region) = &self.region {
            cmd.arg("--region")
                .arg(region)
                .arg("--region-size")
                .arg(self.region_size.to_string())
                .arg("--channels")
                .arg(self.channels.to_string());
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        // A listening host serves TLS with material from `vgpuctl host tls-init` unless the
        // test chose clear text (`--tcp-cleartext`) or its own material, and gets a key unless
        // the test chose (`--tcp-key`/`--tcp-insecure`): its TCP clients then authenticate
        // both ways, as a careful production host's do.
        let listens = self.args.iter().any(|a| a == "--listen");
        let has = |flag: &str| self.args.iter().any(|a| a == flag);
        let cleartext = has("--tcp-cleartext");
        let tls_dir = (listens && !cleartext && !has("--tls-cert")).then(|| {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = tmp(&format!("tls-{}", N.fetch_add(1, Ordering::Relaxed)));
            let _ = std::fs::remove_dir_all(&dir);
            vgpuctl::tls_init::tls_init(
                &vgpuctl::tls_init::TlsInitOptions {
                    dir: dir.clone(),
                    names: vec!["127.0.0.1".into(), "localhost".into()],
                },
                &mut std::io::sink(),
            )
            .expect("vgpuctl host tls-init");
            cmd.arg("--tls-cert")
                .arg(dir.join("host.pem"))
                .arg("--tls-key")
                .arg(dir.join("host.key"))
                .arg("--tls-client-ca")
                .arg(dir.join("ca.pem"));
            dir
        });
        let tcp_key = (listens && !has("--tcp-key") && !has("--tcp-insecure")).then(|| {
            use std::os::unix::fs::PermissionsExt;
            static N: AtomicU32 = AtomicU32::new(0);
            let key = tmp(&format!("tcp-{}.key", N.fetch_add(1, Ordering::Relaxed)));
            std::fs::write(&key, b"a test key of thirty-two bytes!!\n").expect("write the key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the key");
            cmd.arg("--tcp-key").arg(&key);
            key
        });
        if let Some(log) = &self.driver_log {
            cmd.env("FAKE_CUDA_LOG", log);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vgpu-host");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let (keep, closed) = (lines.clone(), stderr_closed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("[host] {line}");
                if line.starts_with("vgpu-host: serving ") {
                    let _ = ready_tx.send(line.clone());
                }
                keep.lock().expect("lines").push(line);
            }
            closed.store(true, Ordering::Release);
        });
        let mut host = Host {
            child,
            region: self.region,
            tcp: None,
            metrics: None,
            tcp_key,
            tls_dir,
            cleartext,
            driver_log: self.driver_log,
            lines,
            stderr_closed,
        };
        let ready = ready_rx.recv_timeout(READY_BOUND).unwrap_or_else(|e| {
            panic!(
                "vgpu-host never became ready ({e}): {:?}",
                host.lines.lock().expect("lines")
            )
        });
        // "vgpu-host: serving [REGION, ]tcp ADDR (pid N)"
        host.metrics = ready.split("metrics ").nth(1).map(|rest| {
            rest.split([' ', ','])
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no metrics address in {ready:?}"))
        });
        host.tcp = ready.split("tcp ").nth(1).map(|rest| {
            rest.split([' ', ','])
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no tcp address in {ready:?}"))
        });
        host
    }
}

/// A running `vgpu-host`. Every stderr line is kept (and echoed, for failing tests' output).
/// Dropping it stops the host (SIGTERM, then SIGKILL) and removes its region.
#[derive(Debug)]
pub struct Host {
    child: Child,
    region: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    /// The metrics address from its ready line (`--metrics`).
    metrics: Option<SocketAddr>,
    /// The key file its TCP clients authenticate with (when the builder made one).
    tcp_key: Option<PathBuf>,
    /// The `vgpuctl host tls-init` directory of its TLS material (when the builder made it).
    tls_dir: Option<PathBuf>,
    /// It serves TCP in clear text (`--tcp-cleartext`).
    cleartext: bool,
    driver_log: Option<PathBuf>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_closed: Arc<AtomicBool>,
}

impl Host {
    /// A host on a fresh region named after `tag`.
    pub fn on_region(tag: &str) -> HostBuilder {
        HostBuilder {
            region: Some(unique_region(tag)),
            ..Self::without_region()
        }
    }

    /// A host without a region (give it `--listen`).
    pub fn without_region() -> HostBuilder {
        HostBuilder {
            driver: FakeDriver::Plain,
            region: None,
            region_size: 8 << 20,
            channels: 8,
            args: Vec::new(),
            env: Vec::new(),
            driver_log: None,
        }
    }

    /// The host's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The region it serves.
    pub fn region(&self) -> &Path {
        self.region.as_deref().expect("a host with a region")
    }

    /// The TCP address from its ready line.
    pub fn tcp(&self) -> SocketAddr {
        self.tcp.expect("a host listening on tcp")
    }

    /// The metrics address from its ready line (`--metrics`).
    pub fn metrics(&self) -> SocketAddr {
        self.metrics.expect("a host serving metrics")
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The one worker of guest process `guest` (waits, bounded, until exactly one exists).
    pub fn worker_of(&self, guest: u32) -> u32 {
        one_child_named(self.pid(), &format!("vgpuw-{guest}"))
    }

    /// What the fake driver logged so far (see [`HostBuilder::log_driver_calls`]).
    pub fn driver_log(&self) -> String {
        let log = self.driver_log.as_ref().expect("log_driver_calls");
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// SIGTERM, and waits (bounded) for the exit and for the last stderr line.
    pub fn stop(&mut self) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "vgpu-host ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stderr_closed.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }

    /// Waits (bounded) for a log line containing every one of `parts`; returns it.
    pub fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(Instant::now() < deadline, "no host log line with {parts:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines so far contain every one of `parts`.
    pub fn count_lines(&self, parts: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits (bounded) until `expected` log lines contain every one of `parts`, since the
    /// host may log an event just after the peer saw its effect; returns the count then (more
    /// than `expected` when extra lines came, fewer when the wait ran out).
    pub fn count_lines_awaiting(&self, parts: &[&str], expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.count_lines(parts);
            if n >= expected || Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines so far, one per line.
    pub fn log_text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Fails if any log line so far reports a panic.
    pub fn assert_no_panic(&self) {
        for line in self.lines.lock().expect("lines").iter() {
            assert!(!line.contains("panicked"), "{line}");
        }
    }

    /// `program` with the shim preloaded, reaching this host through its region; no other
    /// `VGPU_*` setting is inherited from the test's environment.
    pub fn client(&self, program: &Path) -> Command {
        let mut cmd = guest_command(program);
        cmd.env("VGPU_REGION", self.region());
        cmd
    }

    /// `program` with the shim preloaded, reaching this host over TCP (`VGPU_HOST`; the
    /// `VGPU_TLS_*` files of its material, or `VGPU_TCP_CLEARTEXT=1`; `VGPU_HOST_KEY_FILE` when
    /// the host has a key).
    pub fn tcp_client(&self, program: &Path) -> Command {
        let mut cmd = guest_command(program);
        cmd.env("VGPU_HOST", self.tcp().to_string());
        if let Some(dir) = &self.tls_dir {
            cmd.env("VGPU_TLS_CA", dir.join("ca.pem"))
                .env("VGPU_TLS_CERT", dir.join("client.pem"))
                .env("VGPU_TLS_KEY", dir.join("client.key"));
        }
        if self.cleartext {
            cmd.env("VGPU_TCP_CLEARTEXT", "1");
        }
        if let Some(key) = &self.tcp_key {
            cmd.env("VGPU_HOST_KEY_FILE", key);
        }
        cmd
    }

    /// The key file its TCP clients authenticate with, if the builder made one.
    pub fn tcp_key(&self) -> Option<&Path> {
        self.tcp_key.as_deref()
    }

    /// The `vgpuctl host tls-init` directory of its TLS material, if the builder made it.
    pub fn tls_dir(&self) -> Option<&Path> {
        self.tls_dir.as_deref()
    }

    /// The TLS settings of a guest with the material's client certificate.
    pub fn tls_client_config(&self) -> transport::TlsClientConfig {
        let dir = self.tls_dir().expect("a host with TLS material");
        transport::TlsClientConfig::load(
            &dir.join("ca.pem"),
            &dir.join("client.pem"),
            &dir.join("client.key"),
            "127.0.0.1",
        )
        .expect("the test material")
    }

    /// A raw TCP client of this host, authenticated as [`Host::tcp_client`]'s are.
    pub fn tcp_connect(&self) -> Box<dyn transport::Transport> {
        let key = self
            .tcp_key
            .as_deref()
            .map(|k| transport::StreamKey::from_file(k).expect("the test key"));
        if self.tls_dir.is_some() {
            Box::new(
                transport::TlsClient::connect_tls(
                    self.tcp(),
                    &self.tls_client_config(),
                    key.as_ref(),
                )
                .expect("tls connect"),
            )
        } else {
            Box::new(
                transport::TcpClient::connect_with_key(self.tcp(), key.as_ref())
                    .expect("tcp connect"),
            )
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(4);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(region) = &self.region {
            let _ = std::fs::remove_file(region);
        }
    }
}

/// `program` with the shim preloaded and every inherited `VGPU_*` variable removed.
fn guest_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", built_shim());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VGPU_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A finished guest program's output.
#[derive(Debug)]
pub struct ClientOutput {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs a guest program to its end; asserts it succeeded and nothing panicked.
pub fn run_client(cmd: &mut Command) -> ClientOutput {
    let out = cmd.output().expect("run client");
    let run = ClientOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "client failed: {}{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}
