//! The state file: what `install` changed, with prior contents, so `uninstall` can put it back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::paths::{self, Root};

/// Version of the state-file format.
pub const STATE_VERSION: u32 = 1;

/// What a path held (or should hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// Nothing there.
    Absent,
    /// A regular file.
    File {
        /// Its text.
        contents: String,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: PathBuf,
    },
    /// A directory.
    Dir,
}

impl Entry {
    /// Reads what is at target path `path` under `root` now.
    ///
    /// # Errors
    /// When the path exists but cannot be read, or holds a non-UTF-8 file (vgpuctl only manages
    /// text files and would not be able to restore it exactly).
    pub fn read(root: &Root, path: &Path) -> Result<Self, Error> {
        let real = root.resolve(path);
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::Absent),
            Err(e) => return Err(Error::io("stat", real, e)),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&real).map_err(|e| Error::io("readlink", &real, e))?;
            return Ok(Self::Symlink { target });
        }
        if meta.is_dir() {
            return Ok(Self::Dir);
        }
        let bytes = fs::read(&real).map_err(|e| Error::io("read", &real, e))?;
        let contents = String::from_utf8(bytes).map_err(|_| {
            Error::Refused(format!(
                "{} is not a text file; vgpuctl will not replace it",
                real.display()
            ))
        })?;
        Ok(Self::File {
            contents,
            mode: meta.permissions().mode() & 0o7777,
        })
    }
}

/// One path `install` manages, with what it held before the first install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Target-system path.
    pub path: PathBuf,
    /// What was there before vgpuctl touched it.
    pub prior: Entry,
}

/// Contents of `/var/lib/vgpu/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The service vgpu was installed into (unit name).
    pub service: String,
    /// The shim library path.
    pub lib: PathBuf,
    /// Region path handed to the shim, if any.
    pub region: Option<String>,
    /// Directories vgpuctl created, in creation order (removed in reverse when empty).
    pub created_dirs: Vec<PathBuf>,
    /// Files and links vgpuctl wrote, in write order, with their prior contents.
    pub files: Vec<Recorded>,
}

impl State {
    /// The recorded prior entry for `path`, if recorded.
    pub fn prior(&self, path: &Path) -> Option<&Entry> {
        self.files.iter().find(|r| r.path == path).map(|r| &r.prior)
    }

    /// Loads the state file under `root`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// When it exists but cannot be read or parsed.
    pub fn load(root: &Root) -> Result<Option<Self>, Error> {
        let real = root.resolve(paths::STATE_FILE);
        let text = match fs::read_to_string(&real) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", real, e)),
        };
        let state: Self = serde_json::from_str(&text).map_err(|e| Error::State {
            path: real.clone(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(Error::State {
                path: real,
                reason: format!("unknown format version {}", state.version),
            });
        }
        Ok(Some(state))
    }

    /// The JSON text written to the state file.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("state serialises");
        s.push('\n');
        s
    }
}
