//! `vgpuctl uninstall`: put back exactly what the state file recorded.

use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::fsops::{self, Action};
use crate::install::print_recorded;
use crate::paths::{self, Root};
use crate::state::{Entry, State};
use crate::systemctl::{self, CommandRunner};

/// Restores every recorded path to its prior contents (reverse write order), removes the state
/// file, then the directories vgpuctl created (when empty). Returns the number of paths changed.
///
/// # Errors
/// I/O failures; a created directory that is not empty is left in place with a warning.
pub fn restore(
    root: &Root,
    state: &State,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<usize, Error> {
    let mut changed = 0;
    let mut steps: Vec<(&Path, &Entry)> = state
        .files
        .iter()
        .rev()
        .map(|r| (r.path.as_path(), &r.prior))
        .collect();
    steps.push((Path::new(paths::STATE_FILE), &Entry::Absent));
    for (path, prior) in steps {
        let cur = Entry::read(root, path)?;
        let action = Action::between(&cur, prior);
        if action == Action::Unchanged {
            continue;
        }
        let word = match prior {
            Entry::Absent => "remove",
            _ => "restore",
        };
        writeln!(out, "  {word:<9} {}", path.display()).ok();
        if !dry_run {
            fsops::apply(root, path, prior)?;
        }
        changed += 1;
    }
    for d in state.created_dirs.iter().rev() {
        let real = root.resolve(d);
        if !real.is_dir() {
            continue;
        }
        let empty = std::fs::read_dir(&real)
            .map(|mut r| r.next().is_none())
            .unwrap_or(false);
        if dry_run {
            writeln!(out, "  rmdir     {}/", d.display()).ok();
            changed += 1;
        } else if empty {
            std::fs::remove_dir(&real).map_err(|e| Error::io("rmdir", &real, e))?;
            writeln!(out, "  rmdir     {}/", d.display()).ok();
            changed += 1;
        } else {
            writeln!(
                out,
                "  kept      {}/ (not empty: holds files vgpuctl did not write)",
                d.display()
            )
            .ok();
        }
    }
    Ok(changed)
}

/// What `vgpuctl uninstall` was asked.
#[derive(Debug, Clone, Default)]
pub struct UninstallOptions {
    /// The service named with `--service` (`ollama` or `ollama.service`), checked against the
    /// state file; `None` takes the recorded one.
    pub service: Option<String>,
    /// Restart the service afterwards.
    pub restart: bool,
    /// Print what would be restored; change nothing.
    pub dry_run: bool,
}

/// `vgpuctl uninstall`.
///
/// # Errors
/// [`Error::State`] when there is no state file; [`Error::Refused`] when `--service` names
/// another service than the one installed (nothing is changed); otherwise as [`restore`].
pub fn uninstall(
    root: &Root,
    runner: &mut dyn CommandRunner,
    opts: &UninstallOptions,
    out: &mut dyn Write,
) -> Result<usize, Error> {
    let (dry_run, restart) = (opts.dry_run, opts.restart);
    let state = State::load(root)?.ok_or_else(|| Error::State {
        path: root.resolve(paths::STATE_FILE),
        reason: "not found: vgpu is not installed (for an emergency use `vgpuctl recover`)".into(),
    })?;
    if let Some(asked) = &opts.service {
        let unit = paths::unit_name(asked);
        if unit != state.service {
            return Err(Error::Refused(format!(
                "vgpu is installed into {}, not {unit}; nothing was changed \
                 (run `vgpuctl uninstall --service {}`, or without --service)",
                state.service,
                paths::unit_stem(&state.service)
            )));
        }
    }
    writeln!(
        out,
        "{}uninstalling vgpu from {}",
        if dry_run { "[dry-run] " } else { "" },
        state.service
    )
    .ok();
    let n = restore(root, &state, dry_run, out)?;
    if dry_run {
        writeln!(out, "  would run: systemctl daemon-reload").ok();
        writeln!(out, "dry run: nothing was changed").ok();
        return Ok(n);
    }
    systemctl::daemon_reload(runner)?;
    if restart {
        systemctl::restart(runner, &state.service)?;
    }
    writeln!(out, "uninstalled ({n} paths restored or removed)").ok();
    print_recorded(runner, out);
    Ok(n)
}
