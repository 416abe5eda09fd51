//! Regenerates `cuda-headers/src/generated/` from the CUDA headers. Run by hand (see docs/headers.md),
//! never from a build script.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

pub mod bindings;
pub mod error;
pub mod merge;
pub mod proc_address;
pub mod render;
pub mod tables;
pub mod wheel;

use std::path::{Path, PathBuf};

pub use error::GenerateError;

/// Where the headers come from.
#[derive(Debug, Clone)]
pub enum HeaderSource {
    /// A pinned PyPI wheel, fetched into `cache` when absent.
    Wheel {
        /// The pinned wheel.
        wheel: &'static wheel::PinnedWheel,
        /// The cache directory (outside the repository).
        cache: PathBuf,
    },
    /// A local toolkit's include directory.
    Local(PathBuf),
}

impl HeaderSource {
    /// The include directory, fetching the wheel if needed.
    ///
    /// # Errors
    /// Download or unpack failures.
    pub fn include_dir(&self) -> Result<PathBuf, GenerateError> {
        match self {
            Self::Wheel { wheel, cache } => wheel.ensure_headers(cache),
            Self::Local(dir) => Ok(dir.clone()),
        }
    }

    /// Where the stand-in GL/EGL/VDPAU headers are written.
    fn scratch_dir(&self) -> PathBuf {
        match self {
            Self::Wheel { cache, .. } => cache.join("stand-in-include"),
            Self::Local(_) => wheel::default_cache_dir().join("stand-in-include"),
        }
    }

    /// The provenance line written into each generated file.
    fn describe(&self, include: &Path) -> Result<String, GenerateError> {
        Ok(match self {
            Self::Wheel { wheel, .. } => format!(
                "CUDA {} cuda.h — DO NOT EDIT.\n// Source: PyPI {}=={}, {}, sha256 {}.",
                wheel.version, wheel.package, wheel.version, wheel.file_name, wheel.sha256
            ),
            Self::Local(_) => format!(
                "CUDA_VERSION {} cuda.h — DO NOT EDIT.\n// Source: a local include directory.",
                cuda_version(include)?
            ),
        })
    }
}

/// The generated files' contents, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `(file name, contents)` for each file of `cuda-headers/src/generated/`.
    pub files: Vec<(&'static str, String)>,
}

/// Runs both bindgen passes, merges them and renders every generated file.
///
/// # Errors
/// Any [`GenerateError`]: missing headers, libclang, rustfmt, unexpected output.
pub fn generate(source: &HeaderSource) -> Result<Generated, GenerateError> {
    let include = source.include_dir()?;
    let stand_in = bindings::write_stand_in_headers(&source.scratch_dir())?;
    let provenance = source.describe(&include)?;
    let mut merged = merge::Merged::default();
    for pass in [bindings::Pass::Internal, bindings::Pass::LegacyStream] {
        merged.add_pass(&bindings::run(&include, &stand_in, pass)?)?;
    }
    let results = tables::result_codes(&merged.items)?;
    let versions = tables::proc_versions(&include)?;
    Ok(Generated {
        files: vec![
            ("cuda.rs", render::signature_file(&merged, &provenance)?),
            (
                "errors.rs",
                render::data_file(&tables::render_errors(&results), &provenance)?,
            ),
            (
                "versions.rs",
                render::data_file(&tables::render_versions(&versions), &provenance)?,
            ),
        ],
    })
}

/// Reads `#define CUDA_VERSION NNNNN` from `cuda.h`.
///
/// # Errors
/// A missing `cuda.h` or one without the define.
pub fn cuda_version(include: &Path) -> Result<u32, GenerateError> {
    let path = include.join("cuda.h");
    let text = std::fs::read_to_string(&path).map_err(|e| GenerateError::io(&path, e))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("#define CUDA_VERSION"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| GenerateError::Output(format!("{}: no CUDA_VERSION", path.display())))
}

/// The committed output directory, `cuda-headers/src/generated`.
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/generated")
}
