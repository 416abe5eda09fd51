//! `vgpu-host`: checks the driver, creates the region, and supervises one worker process per
//! guest process (see `docs/host.md`). `vgpu-host worker …` is the hidden worker mode.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use host::cli::{Cli, Doorbell, Mode, ServeArgs};
use host::driver_check::{self, EXIT_REGION};
use host::listener::{Listener, EXIT_LISTEN};
use host::reporting::{ControlSocket, MetricsServer, Reporter, EXIT_ENDPOINT};
use host::supervisor::{Supervisor, WorkerSpawn};
use transport::{DoorbellMode, Region, RegionConfig};

/// How long the supervisor waits for its first spare worker before announcing readiness.
const WARM_BOUND: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    let log = log_filter(cli.log.as_deref());
    host::logging::init(&log);
    // Neither the supervisor nor a worker may be read or traced by other processes of its uid,
    // nor leave a core file: a worker holds its client's data (issue 11, worker hardening).
    match host::hardening::make_non_dumpable() {
        Ok(()) => tracing::debug!("process is not dumpable"),
        Err(e) => tracing::warn!("cannot make the process non-dumpable: {e}"),
    }
    // A guest that shrinks the region file must not end this process with SIGBUS: the region's
    // pages turn to zeros and its channels report the region gone (transport/src/truncation.rs).
    if let Err(e) = transport::protect_from_truncation() {
        tracing::warn!("cannot guard against a truncated region file (SIGBUS handler): {e}");
    }
    let code = match &cli.mode {
        Some(Mode::Worker(args)) => host::worker::run(args),
        None => serve(&cli.serve, log),
    };
    std::process::exit(code);
}

fn log_filter(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("VGPU_HOST_LOG").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "info".to_owned())
}

fn serve(args: &ServeArgs, log: String) -> i32 {
    let started = Instant::now();
    if args.region.is_none() && args.listen.is_empty() {
        eprintln!("vgpu-host: give --region, --listen, or both");
        return 2;
    }
    // TCP clients show a certificate in TLS 1.3; clear text only when asked for.
    let security = match host::tcp_security::TcpSecurity::from_args(args) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("vgpu-host: {e}");
            return 2;
        }
    };
    if let Some(fd) = args.ready_fd {
        // SAFETY: F_SETFD on a descriptor number only changes its close-on-exec flag (or fails
        // with EBADF); workers must not inherit the ready pipe.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let info = match driver_check::check(&args.driver) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("vgpu-host: {e}");
            return e.exit_code();
        }
    };
    tracing::info!(
        devices = info.devices,
        driver_version = info.version,
        "driver {} ready",
        args.driver.display()
    );
    if let Err(e) = host::signals::install() {
        eprintln!("vgpu-host: cannot install signal handlers: {e}");
        return 1;
    }
    let created = args.region.as_deref().is_some_and(|p| !p.exists());
    let remove_created = || {
        if let (true, Some(path)) = (created, &args.region) {
            let _ = std::fs::remove_file(path);
        }
    };
    let region = match args.region.as_deref().map(|p| (p, create_region(p, args))) {
        None => None,
        Some((_, Ok(r))) => Some(r),
        Some((path, Err(e))) => {
            eprintln!("vgpu-host: cannot create region {}: {e}", path.display());
            remove_created();
            return EXIT_REGION;
        }
    };
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let Some(security) = security.clone() else {
            break; // `security` is `Some` whenever something listens
        };
        match Listener::bind(*addr, security) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("vgpu-host: cannot listen on {addr}: {e}");
                remove_created();
                return EXIT_LISTEN;
            }
        }
    }
    let metrics = match args.metrics.map(MetricsServer::bind).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vgpu-host: cannot serve metrics on {:?}: {e}", args.metrics);
            remove_created();
            return EXIT_ENDPOINT;
        }
    };
    let control = match args.control.as_deref().map(ControlSocket::bind).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "vgpu-host: cannot bind the control socket {:?}: {e}",
                args.control
            );
            remove_created();
            return EXIT_ENDPOINT;
        }
    };
    let served: Vec<String> = args
        .region
        .iter()
        .map(|p| p.display().to_string())
        .chain(listeners.iter().map(|l| format!("tcp {}", l.local_addr())))
        .chain(
            metrics
                .iter()
                .map(|m| format!("metrics {}", m.local_addr())),
        )
        .collect();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("vgpu-host: cannot find own executable: {e}");
            return 1;
        }
    };
    let spawn = WorkerSpawn {
        exe,
        region: args.region.clone(),
        driver: args.driver.clone(),
        log,
        context_pool: args.context_pool,
        stream_grace: (!listeners.is_empty()).then(|| Duration::from_millis(args.tcp_grace_ms)),
        max_clients: args.max_clients,
        max_clients_per_region: args.max_clients_per_region,
        max_clients_per_listener: args.max_clients_per_listener,
        max_connections_per_client: args.max_connections_per_client,
        client_memory_mib: args.client_memory_mib,
        client_contexts: args.client_contexts,
    };
    let reported_region = region.clone().zip(args.region.clone());
    let mut supervisor = Supervisor::new(region, spawn, args.prewarm);
    let reporter = Arc::new(Reporter::new(supervisor.roster(), reported_region, started));
    if let Some(metrics) = metrics {
        let addr = metrics.local_addr();
        if let Err(e) = metrics.spawn(reporter.clone()) {
            eprintln!("vgpu-host: cannot start the metrics thread: {e}");
            remove_created();
            return 1;
        }
        tracing::info!("metrics at http://{addr}/metrics");
    }
    let _control = match control.map(|c| c.spawn(reporter.clone())).transpose() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("vgpu-host: cannot start the control thread: {e}");
            remove_created();
            return 1;
        }
    };
    for listener in listeners {
        let addr = listener.local_addr();
        if let Err(e) = listener.spawn(supervisor.intake()) {
            eprintln!("vgpu-host: cannot start the listener on {addr}: {e}");
            remove_created();
            return 1;
        }
        if let Some(security) = &security {
            security.log_listening(addr);
        }
    }
    supervisor.warm_up(WARM_BOUND);
    announce_ready(&served.join(", "), args.ready_fd);
    supervisor.run();
    if let (true, false, Some(path)) = (created, args.keep_region, &args.region) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    0
}

fn create_region(path: &Path, args: &ServeArgs) -> Result<Region, String> {
    let config = RegionConfig {
        channel_count: args.channels,
        doorbell: match args.doorbell {
            Doorbell::Futex => DoorbellMode::Futex,
            Doorbell::Poll => DoorbellMode::Poll,
        },
        peer_timeout: Duration::from_millis(args.peer_timeout_ms),
        ..RegionConfig::default()
    };
    let existing = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let size = match (existing, args.region_size) {
        (0, size) => size.unwrap_or(host::cli::DEFAULT_REGION_SIZE),
        (existing, None) => existing,
        (existing, Some(size)) if size <= existing => existing,
        (existing, Some(size)) => {
            // Growing a file a VM maps would give host and guest different regions.
            return Err(format!(
                "the file already holds {existing} bytes; --region-size {size} would grow it, and a guest mapping it would not see the growth"
            ));
        }
    };
    if existing == 0 {
        size_new_file(path, size)?;
    }
    let config = config.fit_to(size).map_err(|e| e.to_string())?;
    Region::create(path, &config).map_err(|e| e.to_string())
}

/// Makes a new (or empty) region file exactly `size` bytes, which the region then fills: a VM's
/// ivshmem device maps the whole file and QEMU wants it to be the size of its BAR, a power of
/// two, where the layout alone would leave it at its own capacity, a little less. Anything but
/// an empty regular file (a sysfs BAR, a device) is left to `Region::create`.
fn size_new_file(path: &Path, size: u64) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o660)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("fstat {}: {e}", path.display()))?;
    if meta.is_file() && meta.len() == 0 {
        file.set_len(size)
            .map_err(|e| format!("size {} to {size} bytes: {e}", path.display()))?;
    }
    Ok(())
}

/// Tells whoever started us that everything is served (`what`: the region path and `tcp ADDR`
/// for each listener): a line on stderr, or `ready\n` on the inherited descriptor `fd`.
fn announce_ready(what: &str, fd: Option<i32>) {
    let pid = std::process::id();
    let Some(fd) = fd else {
        eprintln!("vgpu-host: serving {what} (pid {pid})");
        return;
    };
    // SAFETY: F_GETFD only inspects the descriptor table entry.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        tracing::warn!("--ready-fd {fd} is not an open descriptor");
        return;
    }
    // SAFETY: `fd` is open (checked above) and was handed to us to write once and close; no
    // other owner in this process uses it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if let Err(e) = writeln!(file, "ready") {
        tracing::warn!("cannot write to --ready-fd {fd}: {e}");
    }
    tracing::info!("serving {what} (pid {pid})");
}
