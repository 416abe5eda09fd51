//! Is the client process still there?
//!
//! On one kernel (the guest's pid and start time match a process we can see), a worker watches
//! the client through a pidfd: `poll` wakes the moment the process exits. Where `pidfd_open` is
//! not available it reads `/proc/PID/stat` every [`POLL_EVERY`]. Across a VM the guest pid means
//! nothing here: the worker then relies on the transport's liveness instead (see `worker.rs`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How often a worker looks whether its client is still there: the `/proc` fallback's period,
/// and how often the worker's loop checks its exit conditions (TCP grace, peer timeout) when no
/// event arrives.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Start time (field 22 of `/proc/PID/stat`, clock ticks since boot) of a live, non-zombie
/// process; `None` when there is no such process (or it is a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether `pid`, started at `start` (0 = don't compare), runs on this kernel now.
pub fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && start_time(pid).is_some_and(|s| start == 0 || s == start)
}

/// Whether a client with this identity is a process of our own kernel: its pid exists with the
/// recorded start time. A guest in a VM has pids of another kernel; matching both the pid and a
/// non-zero start time by chance is not a concern.
pub fn same_kernel(pid: u32, start: u64) -> bool {
    start != 0 && alive(pid, start)
}

/// A handle that becomes readable when one process exits.
#[derive(Debug)]
pub struct ProcessWatch {
    pid: u32,
    start: u64,
    pidfd: Option<OwnedFd>,
}

impl ProcessWatch {
    /// Watches `pid` (started at `start`). Falls back to `/proc` polling when pidfds are
    /// unavailable.
    pub fn new(pid: u32, start: u64) -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
        // passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        Self { pid, start, pidfd }
    }

    /// Blocks until the process has exited (returns at once if it already has, or if its pid
    /// now names another process).
    pub fn wait_exit(&self) {
        // Checked after opening the pidfd: if the pid was reused before, the start time differs.
        if !alive(self.pid, self.start) {
            return;
        }
        match &self.pidfd {
            Some(fd) => loop {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd that lives across the call.
                let n = unsafe { libc::poll(&mut p, 1, 1000) };
                if n > 0 || !alive(self.pid, self.start) {
                    return;
                }
            },
            None => {
                while alive(self.pid, self.start) {
                    std::thread::sleep(POLL_EVERY);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn own_process_is_alive_and_same_kernel() {
        let me = std::process::id();
        let start = start_time(me).expect("own stat");
        assert!(start > 0);
        assert!(alive(me, start));
        assert!(same_kernel(me, start));
        assert!(!same_kernel(me, start + 1));
        assert!(!same_kernel(me, 0));
    }

    #[test]
    fn watch_wakes_when_a_child_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let start = start_time(pid).expect("child stat");
        let watch = ProcessWatch::new(pid, start);
        let reaper = std::thread::spawn(move || child.wait());
        let t = Instant::now();
        watch.wait_exit();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert!(!alive(pid, start));
        reaper.join().expect("reaper").expect("wait");
    }
}
