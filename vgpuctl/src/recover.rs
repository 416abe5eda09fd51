//! `vgpuctl recover`: the emergency path. Works with or without a readable state file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsops;
use crate::install::print_recorded;
use crate::ld_so_preload;
use crate::paths::{self, Root};
use crate::state::{Entry, State};
use crate::systemctl::{self, CommandRunner};
use crate::uninstall::restore;

/// Options of `vgpuctl recover`.
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    /// Service to clean when there is no state file.
    pub service: String,
    /// Shim path whose lines are removed from ld.so.preload (besides any line naming the same file name).
    pub lib: PathBuf,
    /// Restart the service afterwards.
    pub restart: bool,
    /// Print what would happen and change nothing.
    pub dry_run: bool,
}

/// Removes the drop-in, the library directory and vgpu's files (exactly as recorded when the
/// state file is readable), and deletes only the lines naming the shim from ld.so.preload.
///
/// # Errors
/// I/O and command failures.
pub fn recover(
    root: &Root,
    runner: &mut dyn CommandRunner,
    opts: &RecoverOptions,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let tag = if opts.dry_run { "[dry-run] " } else { "" };
    let state = match State::load(root) {
        Ok(s) => s,
        Err(e) => {
            writeln!(out, "warning: {e}; removing vgpu's known paths instead").ok();
            None
        }
    };
    let mut libs: Vec<PathBuf> = vec![opts.lib.clone()];
    let service = match &state {
        Some(s) => {
            writeln!(out, "{tag}recovering {} from the state file", s.service).ok();
            libs.push(s.lib.clone());
            restore(root, s, opts.dry_run, out)?;
            s.service.clone()
        }
        None => {
            let unit = paths::unit_name(&opts.service);
            writeln!(out, "{tag}recovering {unit} (no state file)").ok();
            let known = [
                paths::dropin_path(&unit),
                paths::env_file_path(&unit),
                Path::new(paths::PRIVATE_LIB_DIR).join(paths::PRIVATE_LIB_LINK),
                PathBuf::from(paths::RECOVERY_SCRIPT),
                PathBuf::from(paths::STATE_FILE),
            ];
            for p in &known {
                if Entry::read(root, p)
                    .map(|e| e != Entry::Absent)
                    .unwrap_or(true)
                {
                    writeln!(out, "  remove    {}", p.display()).ok();
                    if !opts.dry_run {
                        fsops::apply(root, p, &Entry::Absent)?;
                    }
                }
            }
            let lib_dir = root.resolve(paths::PRIVATE_LIB_DIR);
            if lib_dir.is_dir() && !opts.dry_run {
                let _ = std::fs::remove_dir(&lib_dir);
            }
            unit
        }
    };
    let lib_refs: Vec<&Path> = libs.iter().map(PathBuf::as_path).collect();
    let removed = ld_so_preload::remove_shim_lines(root, &lib_refs, opts.dry_run)?;
    for line in &removed {
        writeln!(out, "  {tag}removed from {}: {line}", paths::LD_SO_PRELOAD).ok();
    }
    if opts.dry_run {
        writeln!(out, "  would run: systemctl daemon-reload").ok();
        writeln!(out, "dry run: nothing was changed").ok();
        return Ok(());
    }
    systemctl::daemon_reload(runner)?;
    if opts.restart {
        systemctl::restart(runner, &service)?;
    } else {
        writeln!(
            out,
            "run `systemctl restart {service}` (or pass --restart) to unload the shim"
        )
        .ok();
    }
    writeln!(out, "recovered").ok();
    print_recorded(runner, out);
    Ok(())
}
