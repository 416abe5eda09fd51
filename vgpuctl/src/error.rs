//! The tool's error type.

use std::path::PathBuf;

/// Everything that can make a vgpuctl command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", …).
        op: &'static str,
        /// The path as resolved on this machine.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The library given with `--lib` is not acceptable as the shim.
    #[error("refusing {path}: {reason}; nothing was changed")]
    BadLibrary {
        /// The library path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// An external command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Command {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external command exited non-zero.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The state file is missing or unreadable.
    #[error("state file {path}: {reason}")]
    State {
        /// The state file path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A request the tool will not carry out.
    #[error("{0}")]
    Refused(String),
    /// `host vm-xml` options that give no usable `<shmem>` device.
    #[error(transparent)]
    VmXml(#[from] crate::vm_xml::VmXmlError),
}

impl Error {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
