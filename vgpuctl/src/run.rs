//! `vgpuctl run -- CMD`: the one-box job. Starts `vgpu-host` on a fresh `/dev/shm` region (or
//! uses a running host's region), runs CMD with the shim preloaded and `VGPU_REGION` set,
//! forwards CMD's exit status, and stops the host it started.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// The host's file name, looked for next to this executable.
pub const HOST_BIN_NAME: &str = "vgpu-host";
/// The shim's file names, looked for next to this executable, in order: the installed and
/// `.gpu-artifacts/` name (scripts/build-shim.sh), then cargo's own output name.
pub const SHIM_NAMES: [&str; 2] = ["libvgpu-cuda.so", "libvgpu_cuda.so"];
/// The NVML facade's file names (soname `libnvidia-ml.so.1`, scripts/build-nvml.sh), looked for
/// next to this executable in the same order.
pub const NVML_NAMES: [&str; 2] = ["libvgpu-nvml.so", "libvgpu_nvml.so"];

/// Whether and which NVML facade `run` preloads after the shim: a preloaded library whose
/// soname is `libnvidia-ml.so.1` is what `dlopen("libnvidia-ml.so.1")` returns, so NVML users
/// (Ollama's driver-version check, monitoring) see the host's GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nvml {
    /// The facade next to vgpuctl, if there is one (quietly none otherwise).
    Beside,
    /// This file; missing is an error.
    At(PathBuf),
    /// None.
    Off,
}

impl Nvml {
    /// From `--nvml PATH` / `--no-nvml`.
    pub fn from_args(path: Option<PathBuf>, off: bool) -> Self {
        match (path, off) {
            (_, true) => Nvml::Off,
            (Some(p), false) => Nvml::At(p),
            (None, false) => Nvml::Beside,
        }
    }

    /// The file to preload, if any.
    fn resolve(&self) -> Result<Option<PathBuf>, Error> {
        match self {
            Nvml::Off => Ok(None),
            Nvml::Beside => Ok(beside_self(&NVML_NAMES)),
            Nvml::At(p) if p.exists() => Ok(Some(p.clone())),
            Nvml::At(p) => Err(Error::Refused(format!(
                "NVML facade {} not found",
                p.display()
            ))),
        }
    }
}
/// How long the host may take to become ready.
pub const READY_BOUND: Duration = Duration::from_secs(10);
/// How long the host gets after SIGTERM before SIGKILL.
pub const STOP_BOUND: Duration = Duration::from_secs(5);
/// Region size of a started host, unless `VGPU_REGION_SIZE` says otherwise: pinned host memory
/// (XLA's and PyTorch's pools) lives in its bulk area, and a tmpfs file only uses what is
/// touched.
pub const DEFAULT_REGION_SIZE: u64 = 1 << 30;
/// Smallest region worth starting a host on (the host's own default).
pub const MIN_REGION_SIZE: u64 = 64 << 20;
/// `VGPU_SPIN_US` for a started host and CMD when the caller set none: on a machine whose GPU
/// the host owns, waiters spin up to 1 ms before they sleep, as CUDA's own synchronisation spins.
/// Measured on the H200: llama.cpp decode 0.77× → 0.95× of native (graphs on), a 128-token
/// completion 0.67× → 0.98× (bench/results/2026-12-04-bench.md).
pub const RUN_SPIN_US: &str = "1000";
/// Gives `cmd` [`RUN_SPIN_US`] unless the caller's environment sets `VGPU_SPIN_US`.
fn spin_unless_set(cmd: &mut Command) {
    if std::env::var_os("VGPU_SPIN_US").is_none() {
        cmd.env("VGPU_SPIN_US", RUN_SPIN_US);
    }
}

/// The folder fresh regions live in.
const REGION_DIR: &str = "/dev/shm";

/// Parses a size: bytes, or a number with a `K`, `M`, `G` (binary) suffix.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 10),
        (i, 'm' | 'M') => (&t[..i], 20),
        (i, 'g' | 'G') => (&t[..i], 30),
        _ => (t, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Bytes free for an unprivileged writer in the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The region size for a started host: `asked` (from `VGPU_REGION_SIZE`, else
/// [`DEFAULT_REGION_SIZE`]), shrunk to three quarters of the free space (whole MiB) when the
/// file system holds less, so that pinned pages always fit (a tmpfs that fills up kills the
/// process touching the page with SIGBUS). `Err` with the reason when not even
/// [`MIN_REGION_SIZE`] fits; `Ok((size, Some(note)))` when it was shrunk.
pub fn fit_region(asked: u64, free: Option<u64>) -> Result<(u64, Option<String>), String> {
    let Some(free) = free else {
        return Ok((asked, None));
    };
    if asked <= free {
        return Ok((asked, None));
    }
    let room = free / 4 * 3 / (1 << 20) * (1 << 20);
    if room < MIN_REGION_SIZE {
        return Err(format!(
            "{REGION_DIR} has {} MiB free; a vgpu region needs at least {} MiB (free space, or set VGPU_REGION_SIZE)",
            free >> 20,
            MIN_REGION_SIZE >> 20
        ));
    }
    Ok((
        room,
        Some(format!(
            "{REGION_DIR} has {} MiB free: the region is {} MiB instead of {} MiB (less room for pinned memory)",
            free >> 20,
            room >> 20,
            asked >> 20
        )),
    ))
}

/// The started host's region size, with a line on `err` when it had to shrink.
fn region_size(err: &mut dyn Write) -> Result<u64, Error> {
    let asked = match std::env::var("VGPU_REGION_SIZE") {
        Ok(v) => parse_size(&v)
            .filter(|&n| n >= MIN_REGION_SIZE)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "VGPU_REGION_SIZE={v} is not a size of at least {} MiB (bytes, or with K/M/G)",
                    MIN_REGION_SIZE >> 20
                ))
            })?,
        Err(_) => DEFAULT_REGION_SIZE,
    };
    let (size, note) =
        fit_region(asked, free_bytes(Path::new(REGION_DIR))).map_err(Error::Refused)?;
    if let Some(note) = note {
        writeln!(err, "vgpuctl: {note}").ok();
    }
    Ok(size)
}

/// What `run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Region of a running host; none: start a host on a fresh region.
    pub region: Option<PathBuf>,
    /// The host binary (default: next to this executable).
    pub host_bin: Option<PathBuf>,
    /// The shim (default: next to this executable).
    pub shim: Option<PathBuf>,
    /// The NVML facade to preload after the shim.
    pub nvml: Nvml,
    /// Leave the started host running (and its region in place) after CMD ends.
    pub keep_host: bool,
    /// Trace CMD's calls to a file and print their summary on `err` after it ends.
    pub trace_summary: bool,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// The pid CMD runs as, for the signal forwarder (0 = none).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 && signal != libc::SIGINT {
        // SAFETY: kill is async-signal-safe; `pid` is our unreaped child.
        unsafe { libc::kill(pid, signal) };
    }
}

/// SIGINT reaches CMD from the terminal directly (same process group): vgpuctl only outlives
/// it to clean up. SIGTERM and SIGHUP are passed on to CMD.
fn install_forwarders() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is "no flags, empty mask"; the handler only loads an atomic
        // and calls kill, both async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Next to this executable, the first of `names` that exists.
pub fn beside_self(names: &[&str]) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn fresh_region() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    PathBuf::from(format!(
        "{REGION_DIR}/vgpu-run-{}-{:08x}",
        std::process::id(),
        mix & 0xffff_ffff
    ))
}

/// A host this command started.
struct StartedHost {
    child: Child,
    region: PathBuf,
}

impl StartedHost {
    /// SIGTERM, then SIGKILL after [`STOP_BOUND`]; removes the region if the host left it.
    fn stop(mut self) {
        // SAFETY: kill with the pid of our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_BOUND;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.region);
    }
}

/// How starting the host ended.
enum Start {
    Ready(StartedHost),
    /// The host exited before it was ready, with this status (it printed why).
    Exited(i32),
}

fn start_host(bin: &Path, err: &mut dyn Write) -> Result<Start, Error> {
    let size = region_size(err)?;
    let region = fresh_region();
    let (mut ready_rx, ready_tx) =
        std::io::pipe().map_err(|e| Error::io("create pipe for", bin, e))?;
    let fd = ready_tx.as_raw_fd();
    // SAFETY: clears close-on-exec on a descriptor we own, so the host inherits it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let mut cmd = Command::new(bin);
    spin_unless_set(&mut cmd);
    cmd.arg("--region")
        .arg(&region)
        .arg("--region-size")
        .arg(size.to_string())
        .arg("--ready-fd")
        .arg(fd.to_string())
        .stdin(Stdio::null())
        // The command's CUDA_VISIBLE_DEVICES is the guest's to apply (the shim does); the host
        // must see every GPU, or a guest asking for a device the host hid would find none.
        .env_remove("CUDA_VISIBLE_DEVICES")
        .process_group(0);
    if std::env::var_os("VGPU_HOST_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        cmd.args(["--log", "warn"]);
    }
    // The started host serves metrics where asked (e.g. to compare decode speed with a scraper
    // running, issue 14).
    if let Some(addr) = std::env::var_os("VGPU_HOST_METRICS").filter(|a| !a.is_empty()) {
        cmd.arg("--metrics").arg(addr);
    }
    let spawned = cmd.spawn();
    drop(ready_tx);
    let mut child = spawned.map_err(|source| Error::Command {
        command: bin.display().to_string(),
        source,
    })?;
    let mut p = libc::pollfd {
        fd: ready_rx.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut p, 1, READY_BOUND.as_millis() as i32) };
    let mut word = [0u8; 6];
    let got = if n > 0 {
        ready_rx.read(&mut word).unwrap_or(0)
    } else {
        0
    };
    if got > 0 && word.starts_with(b"ready") {
        return Ok(Start::Ready(StartedHost { child, region }));
    }
    if n > 0 {
        let status = child.wait().map_err(|e| Error::io("wait for", bin, e))?;
        let _ = std::fs::remove_file(&region);
        let code = status.code().unwrap_or(1).max(1);
        return Ok(Start::Exited(code));
    }
    let host = StartedHost { child, region };
    host.stop();
    writeln!(
        err,
        "vgpuctl: {} did not become ready within {} s",
        bin.display(),
        READY_BOUND.as_secs()
    )
    .ok();
    Ok(Start::Exited(1))
}

/// Waits for `child`, passing SIGTERM/SIGHUP on; returns its status as a shell would.
fn wait_forwarding(child: &Child) -> i32 {
    let pid = child.id() as libc::pid_t;
    CHILD.store(pid, Ordering::Relaxed);
    install_forwarders();
    let mut status: libc::c_int = 0;
    let code = loop {
        // SAFETY: waits for our own child; `status` is a valid int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            let s = std::process::ExitStatus::from_raw(status);
            break match (s.code(), s.signal()) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                _ => 1,
            };
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break 1;
        }
    };
    CHILD.store(0, Ordering::Relaxed);
    code
}

/// The environment value of `LD_PRELOAD`: `ours` first (the shim, then the NVML facade), then
/// what was there.
pub fn preload_value(ours: &[&Path], existing: Option<OsString>) -> OsString {
    let mut value = OsString::new();
    for (i, path) in ours.iter().enumerate() {
        if i > 0 {
            value.push(":");
        }
        value.push(path.as_os_str());
    }
    if let Some(rest) = existing.filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(rest);
    }
    value
}

/// Runs the command under vgpu; returns its exit status (or the host's, when the host could
/// not start: it printed its one line). Messages go to `err`.
///
/// # Errors
///
/// [`Error::Refused`] for a missing host binary, shim or region; [`Error::Command`] when CMD
/// or the host cannot be started.
pub fn run(opts: &RunOptions, err: &mut dyn Write) -> Result<i32, Error> {
    let Some(program) = opts.command.first() else {
        return Err(Error::Refused(
            "nothing to run: vgpuctl run -- CMD [ARGS…]".into(),
        ));
    };
    let shim = match &opts.shim {
        Some(s) => s.clone(),
        None => beside_self(&SHIM_NAMES).ok_or_else(|| {
            Error::Refused(format!(
                "no {} next to vgpuctl; pass --shim PATH",
                SHIM_NAMES[0]
            ))
        })?,
    };
    if !shim.exists() {
        return Err(Error::Refused(format!("shim {} not found", shim.display())));
    }
    let nvml = opts.nvml.resolve()?;
    let mut ours = vec![shim.as_path()];
    ours.extend(nvml.as_deref());
    let mut host = None;
    let region = match &opts.region {
        Some(r) => {
            if !r.exists() {
                return Err(Error::Refused(format!(
                    "region {} does not exist (is vgpu-host running?)",
                    r.display()
                )));
            }
            r.clone()
        }
        None => {
            let bin = match &opts.host_bin {
                Some(b) => b.clone(),
                None => beside_self(&[HOST_BIN_NAME]).ok_or_else(|| {
                    Error::Refused(format!(
                        "no {HOST_BIN_NAME} next to vgpuctl; pass --host-bin PATH"
                    ))
                })?,
            };
            match start_host(&bin, err)? {
                Start::Ready(h) => {
                    let r = h.region.clone();
                    host = Some(h);
                    r
                }
                Start::Exited(code) => return Ok(code),
            }
        }
    };
    let trace = opts
        .trace_summary
        .then(|| std::env::temp_dir().join(format!("vgpu-trace-{}.log", std::process::id())));
    let mut command = Command::new(program);
    command
        .args(&opts.command[1..])
        .env(
            "LD_PRELOAD",
            preload_value(&ours, std::env::var_os("LD_PRELOAD")),
        )
        .env("VGPU_REGION", &region);
    spin_unless_set(&mut command);
    if let Some(path) = &trace {
        let _ = std::fs::remove_file(path);
        command.env("VGPU_TRACE", path);
    }
    let spawned = command.spawn();
    let code = match spawned {
        Ok(child) => Ok(wait_forwarding(&child)),
        Err(source) => Err(Error::Command {
            command: program.to_string_lossy().into_owned(),
            source,
        }),
    };
    if let Some(path) = &trace {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let summary = crate::trace_summary::Summary::of(&text, Default::default());
        writeln!(err, "{}trace: {}", summary.render(None, 40), path.display()).ok();
    }
    if let Some(h) = host {
        if opts.keep_host {
            writeln!(
                err,
                "vgpuctl: vgpu-host (pid {}) keeps serving {}",
                h.child.id(),
                h.region.display()
            )
            .ok();
        } else {
            h.stop();
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_goes_first_in_ld_preload() {
        let shim = [Path::new("/x/libvgpu-cuda.so")];
        assert_eq!(preload_value(&shim, None), "/x/libvgpu-cuda.so");
        assert_eq!(preload_value(&shim, Some("".into())), "/x/libvgpu-cuda.so");
        assert_eq!(
            preload_value(&shim, Some("/a.so /b.so".into())),
            "/x/libvgpu-cuda.so:/a.so /b.so"
        );
        let both = [shim[0], Path::new("/x/libvgpu-nvml.so")];
        assert_eq!(
            preload_value(&both, Some("/a.so".into())),
            "/x/libvgpu-cuda.so:/x/libvgpu-nvml.so:/a.so"
        );
    }

    #[test]
    fn nvml_choice_follows_the_flags() {
        assert_eq!(Nvml::from_args(None, false), Nvml::Beside);
        assert_eq!(Nvml::from_args(None, true), Nvml::Off);
        assert_eq!(
            Nvml::from_args(Some("/n.so".into()), false),
            Nvml::At("/n.so".into())
        );
        assert_eq!(Nvml::Off.resolve().unwrap(), None);
        assert!(Nvml::At("/nonexistent/libvgpu-nvml.so".into())
            .resolve()
            .is_err());
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size(" 2g "), Some(2 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999G"), None, "overflow");
    }

    #[test]
    fn the_region_shrinks_to_free_space_or_is_refused() {
        assert_eq!(fit_region(1 << 30, None), Ok((1 << 30, None)));
        assert_eq!(fit_region(1 << 30, Some(24 << 30)), Ok((1 << 30, None)));
        let (size, note) = fit_region(1 << 30, Some(400 << 20)).expect("fits shrunk");
        assert_eq!(size, 300 << 20);
        assert!(note
            .expect("a note")
            .contains("300 MiB instead of 1024 MiB"));
        let refused = fit_region(1 << 30, Some(80 << 20)).expect_err("too little");
        assert!(refused.contains("80 MiB free"), "{refused}");
    }

    #[test]
    fn fresh_regions_live_in_dev_shm_and_differ() {
        let a = fresh_region();
        std::thread::sleep(Duration::from_micros(10));
        let b = fresh_region();
        assert!(a.starts_with("/dev/shm"));
        assert_ne!(a, b);
    }
}
