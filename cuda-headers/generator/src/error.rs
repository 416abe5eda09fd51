//! The generator's error type.

use std::path::PathBuf;

/// Everything that can stop a regeneration.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A command-line argument was missing or malformed.
    #[error("usage: {0}")]
    Usage(String),
    /// The requested CUDA version has no pinned wheel.
    #[error("no pinned wheel for CUDA {0}; add one to `wheel::PINNED_WHEELS`")]
    UnknownCudaVersion(String),
    /// Talking to PyPI failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// PyPI's answer did not contain what we need.
    #[error("PyPI metadata for {package}=={version}: {reason}")]
    Metadata {
        /// The wheel's package name.
        package: String,
        /// The pinned version.
        version: String,
        /// What was wrong.
        reason: String,
    },
    /// The wheel's digest does not match PyPI's published sha256.
    #[error("sha256 mismatch for {file}: PyPI says {expected}, got {actual}")]
    Digest {
        /// The wheel file name.
        file: String,
        /// The published digest.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The wheel could not be unpacked.
    #[error("unpacking {file}: {reason}")]
    Unpack {
        /// The wheel file name.
        file: String,
        /// Why it failed.
        reason: String,
    },
    /// A header needed for generation is not in the include directory.
    #[error("{0} not found (is this a CUDA include directory?)")]
    MissingHeader(PathBuf),
    /// bindgen (libclang) refused the headers.
    #[error("bindgen failed ({pass}): {reason}")]
    Bindgen {
        /// Which of the two passes failed.
        pass: &'static str,
        /// bindgen's message.
        reason: String,
    },
    /// bindgen's output did not parse or merge as expected.
    #[error("unexpected bindgen output: {0}")]
    Output(String),
    /// rustfmt could not format the result.
    #[error("rustfmt failed: {0}")]
    Rustfmt(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl GenerateError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
