//! `vgpuctl status`: what is installed, from the state file and the files themselves.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::dropin::names_shim;
use crate::error::Error;
use crate::install::check_library;
use crate::ld_so_preload;
use crate::paths::{self, Root};
use crate::state::{Entry, State};

/// One managed path and whether it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStatus {
    /// Target-system path.
    pub path: PathBuf,
    /// Whether something is at the path now.
    pub present: bool,
}

/// The status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Whether a state file exists.
    pub installed: bool,
    /// Service vgpu is installed into.
    pub service: Option<String>,
    /// Shim path.
    pub lib: Option<PathBuf>,
    /// Whether the shim passes the library checks now (`None`: not installed).
    pub lib_ok: Option<bool>,
    /// Region path.
    pub region: Option<String>,
    /// Managed paths.
    pub paths: Vec<PathStatus>,
    /// Whether the check found /etc/ld.so.preload naming the shim (must be false).
    pub ld_so_preload_names_shim: bool,
}

/// Collects the status.
///
/// # Errors
/// When the state file exists but cannot be parsed.
pub fn status(root: &Root) -> Result<Status, Error> {
    let state = State::load(root)?;
    let lib = state
        .as_ref()
        .map(|s| s.lib.clone())
        .unwrap_or_else(|| PathBuf::from(paths::DEFAULT_LIB));
    let preload_bad = ld_so_preload::entries(root)
        .map(|e| e.iter().any(|x| names_shim(x, &lib)))
        .unwrap_or(false);
    let Some(s) = state else {
        return Ok(Status {
            installed: false,
            service: None,
            lib: None,
            lib_ok: None,
            region: None,
            paths: Vec::new(),
            ld_so_preload_names_shim: preload_bad,
        });
    };
    let mut ps = Vec::new();
    for r in &s.files {
        let present = Entry::read(root, &r.path)
            .map(|e| e != Entry::Absent)
            .unwrap_or(false);
        ps.push(PathStatus {
            path: r.path.clone(),
            present,
        });
    }
    Ok(Status {
        installed: true,
        service: Some(s.service.clone()),
        lib_ok: Some(check_library(root, &s.lib).is_ok()),
        lib: Some(s.lib.clone()),
        region: s.region.clone(),
        paths: ps,
        ld_so_preload_names_shim: preload_bad,
    })
}

/// Prints the status (`--json`: as JSON).
pub fn print(st: &Status, json: bool, out: &mut dyn Write) {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(st).unwrap_or_default()
        )
        .ok();
        return;
    }
    if !st.installed {
        writeln!(out, "vgpu: not installed (no {})", paths::STATE_FILE).ok();
    } else {
        writeln!(
            out,
            "vgpu: installed into {}",
            st.service.as_deref().unwrap_or("?")
        )
        .ok();
        if let Some(l) = &st.lib {
            let ok = if st.lib_ok == Some(true) {
                "ok"
            } else {
                "MISSING OR INVALID"
            };
            writeln!(out, "  shim:   {} ({ok})", l.display()).ok();
        }
        writeln!(
            out,
            "  region: {}",
            st.region.as_deref().unwrap_or("(shim default)")
        )
        .ok();
        for p in &st.paths {
            writeln!(
                out,
                "  {:<8} {}",
                if p.present { "present" } else { "absent" },
                p.path.display()
            )
            .ok();
        }
    }
    if st.ld_so_preload_names_shim {
        writeln!(
            out,
            "  WARNING: {} names the shim; run `vgpuctl recover`",
            paths::LD_SO_PRELOAD
        )
        .ok();
    }
}
