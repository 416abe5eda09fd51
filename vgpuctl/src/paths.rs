//! Where things live, and `--root` resolution.
//!
//! Every absolute system path the tool touches is written here once, as the path it has on the
//! target system. [`Root::resolve`] maps it under a staged root when `--root DIR` was given.

use std::path::{Path, PathBuf};

/// The drop-in file name vgpuctl owns inside `<service>.service.d/`.
pub const DROPIN_NAME: &str = "vgpu.conf";
/// Directory for vgpuctl's own files (state, recovery script, private library directory).
pub const STATE_DIR: &str = "/var/lib/vgpu";
/// The state file recording what `install` changed.
pub const STATE_FILE: &str = "/var/lib/vgpu/state.json";
/// The emergency recovery script, runnable with plain `sh` from a console.
pub const RECOVERY_SCRIPT: &str = "/var/lib/vgpu/emergency-recovery.sh";
/// Private library directory put on `LD_LIBRARY_PATH`; holds only the `libcuda.so.1` symlink.
pub const PRIVATE_LIB_DIR: &str = "/var/lib/vgpu/lib";
/// The symlink name inside [`PRIVATE_LIB_DIR`].
pub const PRIVATE_LIB_LINK: &str = "libcuda.so.1";
/// The system-wide preload list. vgpuctl never adds to it; `recover` only removes the shim's lines.
pub const LD_SO_PRELOAD: &str = "/etc/ld.so.preload"; // read and checked; only recover removes lines
/// Default location of the shim (the path the seed's guide uses).
pub const DEFAULT_LIB: &str = "/usr/lib64/libvgpu-cuda.so";
/// The soname the shim must carry so that `dlopen("libcuda.so.1")` returns it.
pub const SHIM_SONAME: &str = "libcuda.so.1";
/// Directory for administrator unit files and drop-ins.
pub const ETC_UNIT_DIR: &str = "/etc/systemd/system";
/// Unit search path, highest priority first (systemd's order for system units).
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// Host daemon template unit name.
pub const HOST_UNIT_NAME: &str = "vgpu-host@.service";
/// Default host daemon binary.
pub const DEFAULT_HOST_BIN: &str = "/usr/bin/vgpu-host";
/// Default region path of a host unit instance (`%i` = instance name): libvirt's `<shmem>`
/// backing file of the same name (`vgpuctl host vm-xml`).
pub const DEFAULT_REGION_TEMPLATE: &str = "/dev/shm/vgpu-%i";

/// The filesystem root every system path is resolved under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    staged: Option<PathBuf>,
}

impl Root {
    /// The live system: paths are used as they are.
    pub fn live() -> Self {
        Self { staged: None }
    }

    /// A staged root: `/etc/x` becomes `<dir>/etc/x`.
    pub fn staged(dir: impl Into<PathBuf>) -> Self {
        Self {
            staged: Some(dir.into()),
        }
    }

    /// From the `--root` option.
    pub fn from_option(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(d) => Self::staged(d),
            None => Self::live(),
        }
    }

    /// Whether this is a staged root (then no command runs against the live system).
    pub fn is_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// The staged directory, if any.
    pub fn staged_dir(&self) -> Option<&Path> {
        self.staged.as_deref()
    }

    /// Maps a target-system path to the path to open on this machine.
    pub fn resolve(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match &self.staged {
            None => path.to_path_buf(),
            Some(base) => {
                let rel = path.strip_prefix("/").unwrap_or(path);
                base.join(rel)
            }
        }
    }

    /// Where `/proc` is read from: the live `/proc`, or `<root>/proc` when staged.
    pub fn proc_dir(&self) -> PathBuf {
        self.resolve("/proc")
    }
}

/// `/etc/systemd/system/<service>.service.d/vgpu.conf` for `service` (with or without `.service`).
pub fn dropin_path(service: &str) -> PathBuf {
    Path::new(ETC_UNIT_DIR)
        .join(format!("{}.d", unit_name(service)))
        .join(DROPIN_NAME)
}

/// The environment file vgpuctl writes when the service already takes `LD_PRELOAD` from an
/// `EnvironmentFile=` (those override `Environment=`).
pub fn env_file_path(service: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{}.env", unit_stem(service)))
}

/// `ollama` → `ollama.service`; names with a unit suffix are kept.
pub fn unit_name(service: &str) -> String {
    if service.contains('.') {
        service.to_string()
    } else {
        format!("{service}.service")
    }
}

/// `ollama.service` → `ollama`.
pub fn unit_stem(service: &str) -> &str {
    service.strip_suffix(".service").unwrap_or(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_root_resolves_absolute_paths_inside_it() {
        let r = Root::staged("/tmp/st");
        assert_eq!(
            r.resolve("/etc/ld.so.preload"), // test: resolved under the staged root
            PathBuf::from("/tmp/st/etc/ld.so.preload")  // test: the expected path
        );
        assert_eq!(Root::live().resolve("/etc/x"), PathBuf::from("/etc/x"));
    }

    #[test]
    fn dropin_path_adds_service_suffix() {
        assert_eq!(
            dropin_path("ollama"),
            PathBuf::from("/etc/systemd/system/ollama.service.d/vgpu.conf")
        );
        assert_eq!(dropin_path("ollama.service"), dropin_path("ollama"));
    }
}
