//! Fetching the CUDA headers from NVIDIA's runtime wheel on PyPI into a cache outside the repository.
//!
//! The wheel is pinned by exact version and sha256, so a clean cache and a warm one give the same headers.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::GenerateError;

/// One pinned NVIDIA runtime wheel that carries `cuda.h` and `cudaTypedefs.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedWheel {
    /// The CUDA version a user asks for (`--cuda-version`).
    pub cuda_version: &'static str,
    /// PyPI package name.
    pub package: &'static str,
    /// Exact package version.
    pub version: &'static str,
    /// The wheel file; headers are identical across platforms, x86_64 is the one pinned.
    pub file_name: &'static str,
    /// PyPI's published sha256 of `file_name`.
    pub sha256: &'static str,
    /// Directory inside the wheel that holds the headers.
    pub include_dir: &'static str,
}

/// The wheels this generator knows. To move to a new CUDA release, add a row (see docs/headers.md).
pub const PINNED_WHEELS: &[PinnedWheel] = &[PinnedWheel {
    cuda_version: "13.0",
    package: "nvidia-cuda-runtime",
    version: "13.0.96",
    file_name:
        "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    sha256: "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
    include_dir: "nvidia/cu13/include",
}];

/// The CUDA version whose output is committed.
pub const DEFAULT_CUDA_VERSION: &str = "13.0";

/// Finds the pinned wheel for a CUDA version such as `13.0`.
///
/// # Errors
/// [`GenerateError::UnknownCudaVersion`] when no row of [`PINNED_WHEELS`] matches.
pub fn pinned(cuda_version: &str) -> Result<&'static PinnedWheel, GenerateError> {
    PINNED_WHEELS
        .iter()
        .find(|w| w.cuda_version == cuda_version)
        .ok_or_else(|| GenerateError::UnknownCudaVersion(cuda_version.to_owned()))
}

/// The default cache: `$VGPU_CUDA_HEADERS_CACHE`, else `$XDG_CACHE_HOME/vgpu/cuda-headers`,
/// else `$HOME/.cache/vgpu/cuda-headers`, else a directory under the system temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VGPU_CUDA_HEADERS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vgpu").join("cuda-headers")
}

impl PinnedWheel {
    /// Where this wheel's headers live inside `cache`.
    pub fn cached_include_dir(&self, cache: &Path) -> PathBuf {
        cache
            .join(format!("{}-{}", self.package, self.version))
            .join("include")
    }

    /// Returns the include directory, downloading and unpacking the wheel first if the cache lacks it.
    ///
    /// # Errors
    /// Download, digest, unpack or I/O failures, each naming what failed.
    pub fn ensure_headers(&self, cache: &Path) -> Result<PathBuf, GenerateError> {
        let include = self.cached_include_dir(cache);
        if include.join(".complete").is_file() {
            return Ok(include);
        }
        let wheel = self.download()?;
        self.unpack(&wheel, &include)?;
        Ok(include)
    }

    fn download(&self) -> Result<Vec<u8>, GenerateError> {
        let url = self.find_url()?;
        let response = ureq::get(&url)
            .call()
            .map_err(|e| GenerateError::Download {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(512 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| GenerateError::Download {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != self.sha256 {
            return Err(GenerateError::Digest {
                file: self.file_name.to_owned(),
                expected: self.sha256.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Asks PyPI's JSON simple index (PEP 691) for the pinned file's URL.
    fn find_url(&self) -> Result<String, GenerateError> {
        let index = format!("https://pypi.org/simple/{}/", self.package);
        let meta_err = |reason: String| GenerateError::Metadata {
            package: self.package.to_owned(),
            version: self.version.to_owned(),
            reason,
        };
        let body = ureq::get(&index)
            .set("Accept", "application/vnd.pypi.simple.v1+json")
            .call()
            .map_err(|e| GenerateError::Download {
                url: index.clone(),
                reason: e.to_string(),
            })?
            .into_string()
            .map_err(|e| GenerateError::Download {
                url: index.clone(),
                reason: e.to_string(),
            })?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| meta_err(format!("not JSON: {e}")))?;
        let files = json["files"]
            .as_array()
            .ok_or_else(|| meta_err("no `files` array".to_owned()))?;
        let file = files
            .iter()
            .find(|f| f["filename"] == self.file_name)
            .ok_or_else(|| meta_err(format!("{} is not listed", self.file_name)))?;
        if file["hashes"]["sha256"] != self.sha256 {
            return Err(meta_err(format!(
                "published sha256 {} differs from the pinned {}",
                file["hashes"]["sha256"], self.sha256
            )));
        }
        file["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| meta_err("file has no url".to_owned()))
    }

    /// Extracts the `.h` files under [`PinnedWheel::include_dir`] into `include`, atomically.
    fn unpack(&self, wheel: &[u8], include: &Path) -> Result<(), GenerateError> {
        let unpack_err = |reason: String| GenerateError::Unpack {
            file: self.file_name.to_owned(),
            reason,
        };
        let parent = include.parent().unwrap_or(include);
        fs::create_dir_all(parent).map_err(|e| GenerateError::io(parent, e))?;
        let staging = parent.join(format!("include.tmp-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| GenerateError::io(&staging, e))?;
        }
        fs::create_dir_all(&staging).map_err(|e| GenerateError::io(&staging, e))?;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel))
            .map_err(|e| unpack_err(e.to_string()))?;
        let prefix = format!("{}/", self.include_dir);
        let mut headers = 0usize;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| unpack_err(e.to_string()))?;
            let Some(relative) = entry.name().strip_prefix(&prefix).map(str::to_owned) else {
                continue;
            };
            if !relative.ends_with(".h") || relative.contains("..") {
                continue;
            }
            let target = staging.join(&relative);
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir).map_err(|e| GenerateError::io(dir, e))?;
            }
            let mut contents = Vec::new();
            entry
                .read_to_end(&mut contents)
                .map_err(|e| unpack_err(format!("{relative}: {e}")))?;
            fs::write(&target, contents).map_err(|e| GenerateError::io(&target, e))?;
            headers += 1;
        }
        if headers == 0 {
            return Err(unpack_err(format!("no headers under {prefix}")));
        }
        let marker = staging.join(".complete");
        fs::write(&marker, format!("{}=={}\n", self.package, self.version))
            .map_err(|e| GenerateError::io(&marker, e))?;
        if include.exists() {
            fs::remove_dir_all(include).map_err(|e| GenerateError::io(include, e))?;
        }
        fs::rename(&staging, include).map_err(|e| GenerateError::io(include, e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
