//! Processes seen through `/proc`: who runs, whose child it is, what it is named (workers are
//! named `vgpuw-<guest pid>`, the spare `vgpuw-spare`).

use std::time::{Duration, Instant};

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill takes plain integers; the tests only signal processes they started (or their
    // host's workers) and have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Parent pid, process name, and whether the process is running (not a zombie).
pub fn proc_info(pid: u32) -> Option<(u32, String, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_ascii_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm, state != "Z" && state != "X"))
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: u32) -> bool {
    proc_info(pid).is_some_and(|(_, _, run)| run)
}

/// Live children of `parent` whose name passes `name_matches`.
pub fn children_where(parent: u32, name_matches: impl Fn(&str) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            proc_info(pid).is_some_and(|(pp, c, run)| pp == parent && run && name_matches(&c))
        })
        .collect()
}

/// Live children of `parent` named `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    children_where(parent, |c| c == name)
}

/// Waits (bounded) until `parent` has exactly one live child named `name`; returns its pid.
pub fn one_child_named(parent: u32, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = children_named(parent, name);
        if found.len() == 1 {
            return found[0];
        }
        assert!(
            Instant::now() < deadline,
            "expected one child {name:?} of {parent}, found {found:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid` is gone; panics after `bound`.
pub fn gone_within(pid: u32, bound: Duration, what: &str) {
    let start = Instant::now();
    while running(pid) {
        assert!(
            start.elapsed() < bound,
            "{what} ({pid}) still running after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
