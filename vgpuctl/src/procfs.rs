//! Reading `/proc`: which processes map the shim, descendants, processes by name.

use std::fs;
use std::path::Path;

use crate::dropin::names_shim;

/// Whether `/proc/<pid>/maps` (under `proc_dir`) maps the shim.
///
/// # Errors
/// The I/O error text when the maps file cannot be read.
pub fn maps_shim(proc_dir: &Path, pid: u32, lib: &Path) -> Result<bool, String> {
    let p = proc_dir.join(pid.to_string()).join("maps");
    let text = fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let canonical = fs::canonicalize(lib).ok();
    Ok(text.lines().any(|l| {
        // Fields: address perms offset dev inode pathname (the path may contain spaces).
        let path = l.splitn(6, char::is_whitespace).nth(5).unwrap_or("").trim();
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        !path.is_empty() && (names_shim(path, lib) || canonical.as_deref() == Some(Path::new(path)))
    }))
}

/// All numeric entries of `proc_dir`.
pub fn pids(proc_dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(proc_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Parent pid from `/proc/<pid>/stat` (the field after the parenthesised command name).
pub fn ppid(proc_dir: &Path, pid: u32) -> Option<u32> {
    let s = fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(proc_dir: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(proc_dir.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Every descendant of `root_pid` (children, grandchildren, …), from the ppid links.
pub fn descendants(proc_dir: &Path, root_pid: u32) -> Vec<u32> {
    let links: Vec<(u32, u32)> = pids(proc_dir)
        .into_iter()
        .filter_map(|p| Some((p, ppid(proc_dir, p)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root_pid];
    while let Some(parent) = frontier.pop() {
        for &(child, pp) in &links {
            if pp == parent && child != root_pid && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Processes whose `comm` is `name` (`sshd` also matches `sshd-session` and the like).
pub fn by_comm(proc_dir: &Path, name: &str) -> Vec<u32> {
    pids(proc_dir)
        .into_iter()
        .filter(|&p| {
            comm(proc_dir, p).is_some_and(|c| c == name || c.starts_with(&format!("{name}-")))
        })
        .collect()
}
