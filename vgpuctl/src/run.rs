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
/// How long the host may take to become ready.
pub const READY_BOUND: Duration = Duration::from_secs(10);
/// How long the host gets after SIGTERM before SIGKILL.
pub const STOP_BOUND: Duration = Duration::from_secs(5);

/// What `run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Region of a running host; none: start a host on a fresh region.
    pub region: Option<PathBuf>,
    /// The host binary (default: next to this executable).
    pub host_bin: Option<PathBuf>,
    /// The shim (default: next to this executable).
    pub shim: Option<PathBuf>,
    /// Leave the started host running (and its region in place) after CMD ends.
    pub keep_host: bool,
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
        "/dev/shm/vgpu-run-{}-{:08x}",
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
    let region = fresh_region();
    let (mut ready_rx, ready_tx) =
        std::io::pipe().map_err(|e| Error::io("create pipe for", bin, e))?;
    let fd = ready_tx.as_raw_fd();
    // SAFETY: clears close-on-exec on a descriptor we own, so the host inherits it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let mut cmd = Command::new(bin);
    cmd.arg("--region")
        .arg(&region)
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

/// The environment value of `LD_PRELOAD` with `shim` first.
pub fn preload_value(shim: &Path, existing: Option<OsString>) -> OsString {
    let mut value = OsString::from(shim.as_os_str());
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
    let spawned = Command::new(program)
        .args(&opts.command[1..])
        .env(
            "LD_PRELOAD",
            preload_value(&shim, std::env::var_os("LD_PRELOAD")),
        )
        .env("VGPU_REGION", &region)
        .spawn();
    let code = match spawned {
        Ok(child) => Ok(wait_forwarding(&child)),
        Err(source) => Err(Error::Command {
            command: program.to_string_lossy().into_owned(),
            source,
        }),
    };
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
        let shim = Path::new("/x/libvgpu-cuda.so");
        assert_eq!(preload_value(shim, None), "/x/libvgpu-cuda.so");
        assert_eq!(preload_value(shim, Some("".into())), "/x/libvgpu-cuda.so");
        assert_eq!(
            preload_value(shim, Some("/a.so /b.so".into())),
            "/x/libvgpu-cuda.so:/a.so /b.so"
        );
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
