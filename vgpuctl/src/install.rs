//! `vgpuctl install`: the seed's steps 3–4 as one idempotent, reversible operation.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dropin::{self, DropinValues};
use crate::elf_check;
use crate::error::Error;
use crate::fsops::{self, Action};
use crate::paths::{self, Root};
use crate::recovery_script;
use crate::state::{Entry, Recorded, State, STATE_VERSION};
use crate::systemctl::{self, CommandRunner};
use crate::unit_file::{Origin, ServiceConfig};

/// Options of `vgpuctl install`.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Service name (`ollama` or `ollama.service`).
    pub service: String,
    /// Shim library path on the target system.
    pub lib: PathBuf,
    /// Region path handed to the shim (`VGPU_REGION`).
    pub region: Option<String>,
    /// Restart the service after installing.
    pub restart: bool,
    /// Print the plan and change nothing.
    pub dry_run: bool,
}

/// What `install` did (or would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Each managed path and its action, in write order.
    pub actions: Vec<(PathBuf, Action)>,
    /// Whether anything changed (or would change, with `--dry-run`).
    pub changed: bool,
}

/// Checks the library at target path `lib` under `root`: present, ELF shared object for this
/// machine, soname `libcuda.so.1`.
///
/// # Errors
/// [`Error::BadLibrary`] with the reason.
pub fn check_library(root: &Root, lib: &Path) -> Result<elf_check::SharedObject, Error> {
    let bad = |reason: String| Error::BadLibrary {
        path: lib.to_path_buf(),
        reason,
    };
    if !lib.is_absolute() {
        return Err(bad("the library path must be absolute".into()));
    }
    let real = root.resolve(lib);
    let bytes = match fs::read(&real) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad("no such file (build the shim first)".into()))
        }
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    };
    elf_check::inspect(&bytes, paths::SHIM_SONAME).map_err(|p| bad(p.to_string()))
}

/// The planned contents of every managed path, in write order (state file excluded).
fn desired(root: &Root, opts: &InstallOptions, state: &State) -> Vec<(PathBuf, Entry)> {
    let unit = paths::unit_name(&opts.service);
    let config = ServiceConfig::load(root, &unit);
    let dropin_path = paths::dropin_path(&unit);
    let env_path = paths::env_file_path(&unit);
    // Merge with the service's own settings, never with vgpu's previous drop-in.
    let base = config.without(|p| p == dropin_path);
    let preload = base.effective(root, "LD_PRELOAD");
    let libpath = base.effective(root, "LD_LIBRARY_PATH");
    let from_file = |o: &Option<(String, Origin)>| matches!(o, Some((_, Origin::EnvironmentFile(p))) if p != &env_path);
    let needs_env_file = from_file(&preload) || from_file(&libpath);
    let values = DropinValues {
        ld_preload: dropin::merge_preload(&opts.lib, preload.as_ref().map(|(v, _)| v.as_str())),
        ld_library_path: dropin::merge_library_path(
            paths::PRIVATE_LIB_DIR,
            libpath.as_ref().map(|(v, _)| v.as_str()),
        ),
        region: opts.region.clone(),
        env_file: needs_env_file.then(|| env_path.display().to_string()),
    };
    let mut out = vec![
        (
            PathBuf::from(paths::RECOVERY_SCRIPT),
            Entry::File {
                contents: recovery_script::render(state),
                mode: 0o755,
            },
        ),
        (
            Path::new(paths::PRIVATE_LIB_DIR).join(paths::PRIVATE_LIB_LINK),
            Entry::Symlink {
                target: opts.lib.clone(),
            },
        ),
        (
            env_path,
            if needs_env_file {
                Entry::File {
                    contents: dropin::render_env_file(&values),
                    mode: 0o644,
                }
            } else {
                Entry::Absent
            },
        ),
    ];
    out.push((
        dropin_path,
        Entry::File {
            contents: dropin::render_dropin(&unit, &values),
            mode: 0o644,
        },
    ));
    out
}

/// Directories the managed paths need, with their ancestors, parents first.
fn needed_dirs(unit: &str) -> Vec<PathBuf> {
    let dropin_dir = paths::dropin_path(unit)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    for d in [
        PathBuf::from(paths::STATE_DIR),
        PathBuf::from(paths::PRIVATE_LIB_DIR),
        dropin_dir,
    ] {
        let chain: Vec<&Path> = d.ancestors().filter(|a| a.parent().is_some()).collect();
        for a in chain.into_iter().rev() {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_path_buf());
            }
        }
    }
    out
}

/// Installs the shim into one service. Order of writes: directories, state file, recovery
/// script, library link, environment file, drop-in; then `daemon-reload` (only when something
/// changed) and the restart (only when asked).
///
/// # Errors
/// Refusals ([`Error::BadLibrary`], another service already installed) change nothing; I/O and
/// command failures are reported as they happen.
pub fn install(
    root: &Root,
    runner: &mut dyn CommandRunner,
    opts: &InstallOptions,
    out: &mut dyn Write,
) -> Result<InstallReport, Error> {
    let so = check_library(root, &opts.lib)?;
    let unit = paths::unit_name(&opts.service);
    let previous = State::load(root)?;
    if let Some(p) = &previous {
        if p.service != unit {
            return Err(Error::Refused(format!(
                "vgpu is installed into {} already; run `vgpuctl uninstall` first",
                p.service
            )));
        }
    }
    let unit_real = paths::UNIT_DIRS
        .iter()
        .any(|d| root.resolve(Path::new(d).join(&unit)).exists());
    if !unit_real {
        writeln!(
            out,
            "warning: no unit file for {unit} found; the drop-in will apply once it exists"
        )
        .ok();
    }

    if crate::ld_so_preload::entries(root)?
        .iter()
        .any(|e| dropin::names_shim(e, &opts.lib))
    {
        writeln!(
            out,
            "warning: {} names the shim, so every process loads it; vgpuctl will not edit it here: run `vgpuctl recover`",
            paths::LD_SO_PRELOAD
        )
        .ok();
    }

    // Directories: those absent now are created (and recorded); earlier-created ones stay recorded.
    let mut created_dirs = previous
        .as_ref()
        .map(|p| p.created_dirs.clone())
        .unwrap_or_default();
    let mut dir_actions = Vec::new();
    for d in needed_dirs(&unit) {
        let cur = Entry::read(root, &d)?;
        let action = Action::between(&cur, &Entry::Dir);
        if action == Action::Create && !created_dirs.contains(&d) {
            created_dirs.push(d.clone());
        }
        if action != Action::Unchanged && action != Action::Create {
            return Err(Error::Refused(format!(
                "{} exists and is not a directory",
                d.display()
            )));
        }
        dir_actions.push((d, action));
    }

    // Priors come from the first install; new paths are read now.
    let mut state = State {
        version: STATE_VERSION,
        service: unit.clone(),
        lib: opts.lib.clone(),
        region: opts.region.clone(),
        created_dirs,
        files: Vec::new(),
    };
    let skeleton = desired(root, opts, &state);
    for (path, _) in &skeleton {
        let prior = match previous.as_ref().and_then(|p| p.prior(path)) {
            Some(e) => e.clone(),
            None => Entry::read(root, path)?,
        };
        state.files.push(Recorded {
            path: path.clone(),
            prior,
        });
    }
    let plan = desired(root, opts, &state);
    let state_entry = Entry::File {
        contents: state.to_json(),
        mode: 0o644,
    };

    let mut report = InstallReport {
        actions: Vec::new(),
        changed: false,
    };
    let mut file_plan = vec![(PathBuf::from(paths::STATE_FILE), state_entry)];
    file_plan.extend(plan);
    let mut currents = Vec::new();
    for (path, wanted) in &file_plan {
        let cur = Entry::read(root, path)?;
        let action = Action::between(&cur, wanted);
        currents.push(cur);
        report.actions.push((path.clone(), action));
    }
    report.changed = dir_actions.iter().any(|(_, a)| *a != Action::Unchanged)
        || report.actions.iter().any(|(_, a)| *a != Action::Unchanged);

    writeln!(
        out,
        "{}vgpu into {unit}: shim {} (soname {}, {})",
        if opts.dry_run { "[dry-run] " } else { "" },
        opts.lib.display(),
        so.soname,
        elf_check::machine_name(so.machine)
    )
    .ok();
    for (d, a) in dir_actions.iter().filter(|(_, a)| *a != Action::Unchanged) {
        writeln!(out, "  {:<9} {}/", a.word(), d.display()).ok();
    }
    for (i, (path, wanted)) in file_plan.iter().enumerate() {
        let action = report.actions[i].1;
        if currents[i] == Entry::Absent && *wanted == Entry::Absent {
            continue;
        }
        writeln!(out, "  {:<9} {}", action.word(), path.display()).ok();
        if path == Path::new(paths::STATE_FILE) {
            continue; // its diff would repeat this plan
        }
        if opts.dry_run && action != Action::Unchanged {
            write!(out, "{}", fsops::describe_diff(&currents[i], wanted)).ok();
        }
    }

    if opts.dry_run {
        if report.changed {
            writeln!(out, "  would run: systemctl daemon-reload").ok();
        }
        if opts.restart {
            writeln!(out, "  would run: systemctl restart {unit}").ok();
        }
        writeln!(out, "dry run: nothing was changed").ok();
        return Ok(report);
    }

    if report.changed {
        for (d, a) in &dir_actions {
            if *a == Action::Create {
                fsops::apply(root, d, &Entry::Dir)?;
            }
        }
        // State first, then the recovery script, both before the drop-in.
        for (i, (path, wanted)) in file_plan.iter().enumerate() {
            if report.actions[i].1 != Action::Unchanged {
                fsops::apply(root, path, wanted)?;
            }
        }
        systemctl::daemon_reload(runner)?;
        writeln!(
            out,
            "installed; recovery script: {}",
            paths::RECOVERY_SCRIPT
        )
        .ok();
    } else {
        writeln!(out, "already installed; nothing changed").ok();
    }
    if opts.restart {
        systemctl::restart(runner, &unit)?;
    } else {
        writeln!(
            out,
            "not restarted: run `systemctl restart {unit}` (or pass --restart), then `vgpuctl verify --service {}`",
            paths::unit_stem(&unit)
        )
        .ok();
    }
    print_recorded(runner, out);
    Ok(report)
}

/// Prints the commands a recording runner captured instead of running them.
pub fn print_recorded(runner: &dyn CommandRunner, out: &mut dyn Write) {
    if !runner.is_live() {
        for c in runner.recorded() {
            writeln!(out, "  not run (--root): {c}").ok();
        }
    }
}
