//! Planned file changes: compare, show as a diff, apply atomically, restore.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::Error;
use crate::paths::Root;
use crate::state::Entry;

/// What applying an entry to a path will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Already as wanted.
    Unchanged,
    /// Path absent now; will be created.
    Create,
    /// Path holds something else; will be replaced.
    Update,
    /// Path exists; will be removed.
    Remove,
}

impl Action {
    /// Compares what is there with what is wanted.
    pub fn between(current: &Entry, wanted: &Entry) -> Self {
        match (current, wanted) {
            (c, w) if c == w => Self::Unchanged,
            (Entry::Absent, _) => Self::Create,
            (_, Entry::Absent) => Self::Remove,
            _ => Self::Update,
        }
    }

    /// Word used in plans.
    pub fn word(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Create => "create",
            Self::Update => "update",
            Self::Remove => "remove",
        }
    }
}

/// A line diff of two entries for `--dry-run` output (whole-file, `-`/`+` prefixed).
pub fn describe_diff(current: &Entry, wanted: &Entry) -> String {
    let mut s = String::new();
    let mut side = |e: &Entry, sign: char| match e {
        Entry::Absent => {}
        Entry::Dir => s.push_str(&format!("    {sign} (directory)\n")),
        Entry::Symlink { target } => {
            s.push_str(&format!("    {sign} -> {}\n", target.display()));
        }
        Entry::File { contents, mode } => {
            s.push_str(&format!("    {sign} (mode {mode:o})\n"));
            for l in contents.lines() {
                s.push_str(&format!("    {sign} {l}\n"));
            }
        }
    };
    side(current, '-');
    side(wanted, '+');
    s
}

/// Makes target path `path` hold `wanted`. Files are written to a temporary name in the same
/// directory and renamed into place, so a reader never sees half a file.
///
/// # Errors
/// On any I/O failure.
pub fn apply(root: &Root, path: &Path, wanted: &Entry) -> Result<(), Error> {
    let real = root.resolve(path);
    match wanted {
        Entry::Absent => match fs::symlink_metadata(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("stat", real, e)),
            Ok(m) if m.is_dir() => fs::remove_dir(&real).map_err(|e| Error::io("rmdir", real, e)),
            Ok(_) => fs::remove_file(&real).map_err(|e| Error::io("remove", real, e)),
        },
        Entry::Dir => match fs::create_dir(&real) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(Error::io("mkdir", real, e))
            }
            _ => Ok(()),
        },
        Entry::Symlink { target } => {
            let tmp = temp_name(&real);
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("symlink", &tmp, e))?;
            fs::rename(&tmp, &real).map_err(|e| Error::io("rename", real, e))
        }
        Entry::File { contents, mode } => {
            let tmp = temp_name(&real);
            let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            f.write_all(contents.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io("write", &tmp, e))?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(*mode))
                .map_err(|e| Error::io("chmod", &tmp, e))?;
            fs::rename(&tmp, &real).map_err(|e| Error::io("rename", real, e))
        }
    }
}

fn temp_name(real: &Path) -> std::path::PathBuf {
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    real.with_file_name(format!(".{name}.vgpuctl-tmp"))
}
