//! `vgpuctl verify`: the seed's steps 5–7 and its checklist, checked rather than eyeballed.

use std::fs;
use std::path::{Path, PathBuf};

use crate::checklist::{Checklist, Mark};
use crate::dropin::names_shim;
use crate::ld_so_preload;
use crate::paths::{self, Root};
use crate::procfs;
use crate::state::State;
use crate::systemctl::{self, CommandRunner};
use crate::unit_file::{parse_unit, split_words};

/// Options of `vgpuctl verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Service name.
    pub service: String,
    /// Shim path; default: the one in the state file, else [`paths::DEFAULT_LIB`].
    pub lib: Option<PathBuf>,
}

/// The shim path to look for: explicit, else recorded, else the default.
pub fn shim_path(root: &Root, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    State::load(root)
        .ok()
        .flatten()
        .map(|s| s.lib)
        .unwrap_or_else(|| PathBuf::from(paths::DEFAULT_LIB))
}

/// Whether `LD_PRELOAD`'s first entry in `assignments` (`NAME=value` words) names the shim.
fn preload_first_is_shim(words: &[String], lib: &Path) -> Option<bool> {
    let v = words
        .iter()
        .rev()
        .find_map(|w| w.strip_prefix("LD_PRELOAD="))?;
    let first = v
        .split(|c: char| c == ':' || c.is_whitespace())
        .find(|s| !s.is_empty());
    Some(first.is_some_and(|f| names_shim(f, lib)))
}

/// The process checks: the shim is mapped in `main_pid` and its descendants, and absent from
/// PID 1 and every sshd. `proc_dir` is `/proc` (or a staged copy).
pub fn check_processes(proc_dir: &Path, main_pid: u32, lib: &Path, list: &mut Checklist) {
    match procfs::maps_shim(proc_dir, main_pid, lib) {
        Ok(true) => list.add(
            "main",
            Mark::Pass,
            format!("shim mapped in main process (pid {main_pid})"),
        ),
        Ok(false) => list.add(
            "main",
            Mark::Fail,
            format!("shim NOT mapped in main process (pid {main_pid})"),
        ),
        Err(e) => list.add(
            "main",
            Mark::Fail,
            format!("main process (pid {main_pid}): {e}"),
        ),
    }
    let kids = procfs::descendants(proc_dir, main_pid);
    if kids.is_empty() {
        list.add(
            "children",
            Mark::Info,
            "no child processes now (runners start on demand)",
        );
    } else {
        let missing: Vec<String> = kids
            .iter()
            .filter(|&&k| !procfs::maps_shim(proc_dir, k, lib).unwrap_or(false))
            .map(|k| format!("{k} ({})", procfs::comm(proc_dir, *k).unwrap_or_default()))
            .collect();
        if missing.is_empty() {
            list.add(
                "children",
                Mark::Pass,
                format!("shim mapped in all {} child processes", kids.len()),
            );
        } else {
            list.add(
                "children",
                Mark::Fail,
                format!("shim NOT mapped in child processes: {}", missing.join(", ")),
            );
        }
    }
    match procfs::maps_shim(proc_dir, 1, lib) {
        Ok(false) => list.add("pid1", Mark::Pass, "PID 1 does not have the shim loaded"),
        Ok(true) => list.add(
            "pid1",
            Mark::Fail,
            "PID 1 HAS the shim loaded (system-wide preload?)",
        ),
        Err(e) => list.add("pid1", Mark::Fail, format!("PID 1: {e}")),
    }
    let sshds = procfs::by_comm(proc_dir, "sshd");
    if sshds.is_empty() {
        list.add("sshd", Mark::Info, "no sshd running; nothing to check");
    } else {
        let bad: Vec<String> = sshds
            .iter()
            .filter(|&&p| procfs::maps_shim(proc_dir, p, lib).unwrap_or(true))
            .map(u32::to_string)
            .collect();
        if bad.is_empty() {
            list.add(
                "sshd",
                Mark::Pass,
                format!("no sshd has the shim loaded ({} checked)", sshds.len()),
            );
        } else {
            list.add(
                "sshd",
                Mark::Fail,
                format!(
                    "sshd with the shim loaded (or unreadable): {}",
                    bad.join(", ")
                ),
            );
        }
    }
}

/// Runs every verify check.
pub fn verify(root: &Root, runner: &mut dyn CommandRunner, opts: &VerifyOptions) -> Checklist {
    let unit = paths::unit_name(&opts.service);
    let lib = shim_path(root, opts.lib.as_deref());
    let mut list = Checklist::default();

    let dropin = paths::dropin_path(&unit);
    match fs::read_to_string(root.resolve(&dropin)) {
        Ok(text) => {
            let words: Vec<String> = parse_unit(&text)
                .iter()
                .filter(|e| e.section == "Service" && e.key == "Environment")
                .flat_map(|e| split_words(&e.value))
                .collect();
            if preload_first_is_shim(&words, &lib) == Some(true) {
                list.add(
                    "dropin",
                    Mark::Pass,
                    format!(
                        "systemd override {} preloads {}",
                        dropin.display(),
                        lib.display()
                    ),
                );
            } else {
                list.add(
                    "dropin",
                    Mark::Fail,
                    format!(
                        "{} does not put {} first in LD_PRELOAD",
                        dropin.display(),
                        lib.display()
                    ),
                );
            }
        }
        Err(e) => list.add(
            "dropin",
            Mark::Fail,
            format!("no systemd override {}: {e}", dropin.display()),
        ),
    }

    match systemctl::show_property(runner, &unit, "Environment") {
        Ok(env) => match preload_first_is_shim(&split_words(&env), &lib) {
            Some(true) => list.add(
                "environment",
                Mark::Pass,
                "drop-in in effect: systemctl show -p Environment has the shim first in LD_PRELOAD",
            ),
            Some(false) => list.add(
                "environment",
                Mark::Fail,
                "systemctl show -p Environment: LD_PRELOAD does not start with the shim",
            ),
            None => list.add(
                "environment",
                Mark::Fail,
                "systemctl show -p Environment: no LD_PRELOAD (daemon-reload not run?)",
            ),
        },
        Err(e) => list.add(
            "environment",
            Mark::Fail,
            format!("systemctl show -p Environment: {e}"),
        ),
    }

    let proc_dir = root.proc_dir();
    match systemctl::show_property(runner, &unit, "MainPID").map(|s| s.parse::<u32>()) {
        Ok(Ok(pid)) if pid > 0 => check_processes(&proc_dir, pid, &lib, &mut list),
        Ok(_) => {
            list.add(
                "main",
                Mark::Fail,
                format!("{unit} has no main process (not running?)"),
            );
            let mut rest = Checklist::default();
            check_processes(&proc_dir, 0, &lib, &mut rest);
            list.checks.extend(
                rest.checks
                    .into_iter()
                    .filter(|c| c.id == "pid1" || c.id == "sshd"),
            );
        }
        Err(e) => list.add(
            "main",
            Mark::Fail,
            format!("systemctl show -p MainPID: {e}"),
        ),
    }

    let since = systemctl::show_property(runner, &unit, "ActiveEnterTimestamp").unwrap_or_default();
    if since.is_empty() || since == "n/a" {
        list.add(
            "journal",
            Mark::Fail,
            format!("{unit} has not been started (no ActiveEnterTimestamp)"),
        );
    } else {
        match systemctl::journal_since(runner, &unit, &since) {
            Ok(log) if log.to_ascii_lowercase().contains("library=cuda") => {
                list.add("journal", Mark::Pass, format!("journal since {since} shows library=cuda"));
            }
            Ok(_) => list.add("journal", Mark::Fail, format!("journal since {since} has no library=cuda (CPU fallback, or no model loaded yet)")),
            Err(e) => list.add("journal", Mark::Fail, format!("journalctl: {e}")),
        }
    }

    match ld_so_preload::entries(root) {
        Ok(entries) if entries.iter().any(|e| names_shim(e, &lib)) => list.add_fix(
            "ld_so_preload",
            Mark::Fail,
            format!(
                "{} names the shim: every process on the system loads it",
                paths::LD_SO_PRELOAD
            ),
            "vgpuctl recover   (removes only the shim's lines)".into(),
        ),
        Ok(_) => list.add(
            "ld_so_preload",
            Mark::Pass,
            format!("{} does not name the shim", paths::LD_SO_PRELOAD),
        ),
        Err(e) => list.add("ld_so_preload", Mark::Fail, e.to_string()),
    }
    list
}
