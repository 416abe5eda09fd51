//! `vgpuctl doctor`: the ways a deployment goes wrong that the seed learnt the hard way.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::checklist::{Checklist, Mark};
use crate::dropin::names_shim;
use crate::host_probe::{probe_region, RegionProbe};
use crate::ld_so_preload;
use crate::paths::{self, Root};
use crate::state::State;
use crate::unit_file::{Origin, ServiceConfig};
use crate::verify::shim_path;

/// Globs older Ollama releases (≤ 0.12.3) search for `libcuda.so*`.
pub const LIBCUDA_GLOBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so*",
    "/usr/lib/x86_64-linux-gnu/libcuda.so*",
    "/usr/lib/aarch64-linux-gnu/nvidia/current/libcuda.so*",
    "/usr/lib/aarch64-linux-gnu/libcuda.so*",
    "/usr/lib/wsl/lib/libcuda.so*",
    "/usr/lib/wsl/drivers/*/libcuda.so*",
    "/opt/cuda/lib*/libcuda.so*",
    "/usr/local/cuda*/targets/*/lib/libcuda.so*",
    "/usr/local/cuda*/lib*/libcuda.so*",
    "/usr/lib*/libcuda.so*",
    "/usr/local/lib*/libcuda.so*",
];

/// Options of `vgpuctl doctor`.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Service name.
    pub service: String,
    /// Shim path (default: recorded, else the default path).
    pub lib: Option<PathBuf>,
    /// Region path (default: recorded).
    pub region: Option<PathBuf>,
}

/// `*` matching within one path component.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Expands a glob (`*` in any component) under `root`; returns target-system paths.
pub fn expand_glob(root: &Root, pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &current {
            if comp.contains('*') {
                if let Ok(rd) = fs::read_dir(root.resolve(dir)) {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| wildcard(comp, n))
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| dir.join(n)));
                }
            } else {
                let p = dir.join(comp);
                if fs::symlink_metadata(root.resolve(&p)).is_ok() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current
}

/// Resolves a target-system path through symlinks, staying under `root` (up to 16 hops).
fn resolve_links(root: &Root, path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        match fs::read_link(root.resolve(&p)) {
            Ok(t) => {
                p = if t.is_absolute() {
                    t
                } else {
                    p.parent().unwrap_or(Path::new("/")).join(t)
                }
            }
            Err(_) => break,
        }
    }
    p
}

/// uid and group ids of `user` from `/etc/passwd` and `/etc/group` under `root`.
fn account(root: &Root, user: &str) -> Option<(u32, Vec<u32>)> {
    let passwd = fs::read_to_string(root.resolve("/etc/passwd")).ok()?;
    let (uid, gid) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && (f[0] == user || f[2] == user))
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })?;
    let mut gids = vec![gid];
    if let Ok(group) = fs::read_to_string(root.resolve("/etc/group")) {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 3 && f[3].split(',').any(|m| m == user) {
                if let Ok(g) = f[2].parse() {
                    gids.push(g);
                }
            }
        }
    }
    Some((uid, gids))
}

/// Runs every doctor check.
pub fn doctor(root: &Root, opts: &DoctorOptions) -> Checklist {
    let unit = paths::unit_name(&opts.service);
    let lib = shim_path(root, opts.lib.as_deref());
    let state = State::load(root).ok().flatten();
    let mut list = Checklist::default();

    // 1. ld.so.preload.
    match ld_so_preload::entries(root) {
        Ok(e) if e.iter().any(|x| names_shim(x, &lib)) => list.add_fix(
            "ld_so_preload",
            Mark::Fail,
            format!(
                "{} names the shim: every process loads it (this bricked the seed's VMs)",
                paths::LD_SO_PRELOAD
            ),
            "vgpuctl recover   (removes only the shim's lines, keeps the others)".into(),
        ),
        Ok(e) if e.is_empty() => list.add(
            "ld_so_preload",
            Mark::Pass,
            format!("{} has no entries", paths::LD_SO_PRELOAD),
        ),
        Ok(e) => list.add(
            "ld_so_preload",
            Mark::Info,
            format!(
                "{} has other entries (not vgpu's, left alone): {}",
                paths::LD_SO_PRELOAD,
                e.join(" ")
            ),
        ),
        Err(e) => list.add("ld_so_preload", Mark::Warn, e.to_string()),
    }

    // 2. Stray libcuda.so* where older Ollama looks.
    let config = ServiceConfig::load(root, &unit);
    let lib_real = resolve_links(root, &lib);
    let mut globs: Vec<String> = LIBCUDA_GLOBS.iter().map(|s| s.to_string()).collect();
    if let Some((v, _)) = config.effective(root, "LD_LIBRARY_PATH") {
        for d in v
            .split(':')
            .filter(|d| !d.is_empty() && *d != paths::PRIVATE_LIB_DIR)
        {
            globs.push(format!("{}/libcuda.so*", d.trim_end_matches('/')));
        }
    }
    let mut strays: Vec<String> = Vec::new();
    for g in &globs {
        for p in expand_glob(root, g) {
            let s = p.display().to_string();
            if resolve_links(root, &p) != lib_real && !strays.contains(&s) {
                strays.push(s);
            }
        }
    }
    if strays.is_empty() {
        list.add(
            "stray_libcuda",
            Mark::Pass,
            "no other libcuda.so* on the paths older Ollama searches",
        );
    } else {
        list.add_fix(
            "stray_libcuda",
            Mark::Warn,
            format!(
                "other libcuda.so* that Ollama ≤ 0.12.3 may dlopen instead of the shim: {}",
                strays.join(", ")
            ),
            "remove them, or make sure /var/lib/vgpu/lib comes first in LD_LIBRARY_PATH".into(),
        );
    }

    // 3. Overrides of vgpu's LD_PRELOAD / LD_LIBRARY_PATH.
    let dropin = paths::dropin_path(&unit);
    let env_file = paths::env_file_path(&unit);
    let ours = |o: &Origin| match o {
        Origin::Environment(p) => *p == dropin,
        Origin::EnvironmentFile(p) => *p == env_file,
    };
    if !root.resolve(&dropin).exists() {
        list.add(
            "override",
            Mark::Info,
            format!("vgpu drop-in {} not installed", dropin.display()),
        );
    } else {
        for var in ["LD_PRELOAD", "LD_LIBRARY_PATH"] {
            match config.effective(root, var) {
                Some((_, o)) if ours(&o) => list.add(
                    &format!("override_{var}"),
                    Mark::Pass,
                    format!("{var} comes from vgpu's settings"),
                ),
                Some((v, o)) => list.add_fix(
                    &format!("override_{var}"),
                    Mark::Fail,
                    format!("{var} is overridden by {o} (value {v:?})"),
                    format!(
                        "remove {var} there, or re-run `vgpuctl install` so it merges (shim first)"
                    ),
                ),
                None => list.add(
                    &format!("override_{var}"),
                    Mark::Fail,
                    format!("{var} is not set for {unit}"),
                ),
            }
        }
    }

    // 4. Can the service user open the region?
    let region = opts.region.clone().or_else(|| {
        state
            .as_ref()
            .and_then(|s| s.region.clone())
            .map(PathBuf::from)
    });
    let user = config.user();
    match &region {
        None => list.add(
            "region_access",
            Mark::Info,
            "no region configured (pass --region); skipped",
        ),
        Some(r) => {
            let real = root.resolve(r);
            match (fs::metadata(&real), &user) {
                (Err(e), _) => list.add(
                    "region_access",
                    Mark::Fail,
                    format!("region {}: {e}", r.display()),
                ),
                (Ok(_), None) => list.add(
                    "region_access",
                    Mark::Pass,
                    format!("{unit} runs as root and can open {}", r.display()),
                ),
                (Ok(m), Some(u)) => {
                    let mode = m.mode();
                    let ok = match account(root, u) {
                        Some((uid, gids)) => {
                            (m.uid() == uid && mode & 0o600 == 0o600)
                                || (gids.contains(&m.gid()) && mode & 0o060 == 0o060)
                                || mode & 0o006 == 0o006
                        }
                        None => mode & 0o006 == 0o006,
                    };
                    if ok {
                        list.add(
                            "region_access",
                            Mark::Pass,
                            format!("user {u} can open {} read-write", r.display()),
                        );
                    } else {
                        list.add_fix(
                            "region_access",
                            Mark::Fail,
                            format!("user {u} (User= of {unit}) cannot open {} read-write (mode {:o}, uid {}, gid {}); ivshmem resource2 is root-only by default", r.display(), mode & 0o7777, m.uid(), m.gid()),
                            format!("add to {}: ExecStartPre=+/bin/chown {u} {}", dropin.display(), r.display()),
                        );
                    }
                }
            }
        }
    }

    // 5. Host.
    match &region {
        None => list.add(
            "host",
            Mark::Info,
            "no region configured; host check skipped",
        ),
        Some(r) => {
            let probe = probe_region(&root.resolve(r));
            let note = "(no handshake protocol yet: checked the region header only)";
            let mark = match probe {
                RegionProbe::Ready => Mark::Pass,
                _ => Mark::Fail,
            };
            list.add("host", mark, format!("host: {probe} {note}"));
        }
    }
    list
}
