//! `vgpu-host`: checks the driver, creates the region, and supervises one worker process per
//! guest process (see `docs/host.md`). `vgpu-host worker …` is the hidden worker mode.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use host::cli::{Cli, Doorbell, Mode, ServeArgs};
use host::driver_check::{self, EXIT_REGION};
use host::supervisor::{Supervisor, WorkerSpawn};
use transport::{DoorbellMode, Region, RegionConfig};

/// How long the supervisor waits for its first spare worker before announcing readiness.
const WARM_BOUND: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    let log = log_filter(cli.log.as_deref());
    init_tracing(&log);
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

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}

fn serve(args: &ServeArgs, log: String) -> i32 {
    let Some(path) = args.region.clone() else {
        eprintln!("vgpu-host: --region is required");
        return 2;
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
    let created = !path.exists();
    let region = match create_region(&path, args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vgpu-host: cannot create region {}: {e}", path.display());
            if created {
                let _ = std::fs::remove_file(&path);
            }
            return EXIT_REGION;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("vgpu-host: cannot find own executable: {e}");
            return 1;
        }
    };
    let spawn = WorkerSpawn {
        exe,
        region: path.clone(),
        driver: args.driver.clone(),
        log,
        context_pool: args.context_pool,
    };
    let mut supervisor = Supervisor::new(region, spawn, args.prewarm);
    supervisor.warm_up(WARM_BOUND);
    announce_ready(&path, args.ready_fd);
    supervisor.run();
    if created && !args.keep_region {
        if let Err(e) = std::fs::remove_file(&path) {
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
    let config = config.fit_to(size).map_err(|e| e.to_string())?;
    Region::create(path, &config).map_err(|e| e.to_string())
}

/// Tells whoever started us that the region is served: a line on stderr, or `ready\n` on the
/// inherited descriptor `fd`.
fn announce_ready(path: &Path, fd: Option<i32>) {
    let pid = std::process::id();
    let Some(fd) = fd else {
        eprintln!("vgpu-host: serving {} (pid {pid})", path.display());
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
    tracing::info!("serving {} (pid {pid})", path.display());
}
