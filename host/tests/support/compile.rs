//! Building what the tests run: C programs and fake drivers with `cc`, the guest libraries with
//! their build scripts. Everything is built once per test process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::{root, tmp};

/// Compiles `sources` into `out` with `cc`, `flags` after the sources.
pub fn cc(out: &Path, sources: &[PathBuf], flags: &[&str]) {
    let status = Command::new("cc")
        .arg("-o")
        .arg(out)
        .args(sources)
        .args(flags)
        .status()
        .expect("cc (install a C compiler)");
    assert!(status.success(), "cc failed for {}", out.display());
}

/// Runs `build` the first time `key` is asked for in this process; afterwards returns what it
/// built. Builds run one at a time.
fn built_once(key: &str, build: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    built.entry(key.to_owned()).or_insert_with(build).clone()
}

/// `sources` compiled once to [`tmp`]`(name)` (a program, or with `-shared` a library).
pub fn c_build(name: &str, sources: &[PathBuf], flags: &[&str]) -> PathBuf {
    built_once(name, || {
        let out = tmp(name);
        cc(&out, sources, flags);
        out
    })
}

/// The C program (or, with `-shared`, library) `text`, compiled once to [`tmp`]`(name)`.
pub fn c_program(name: &str, text: &str, flags: &[&str]) -> PathBuf {
    let source = tmp(&format!("{name}.c"));
    std::fs::write(&source, text).expect("write C source");
    c_build(name, &[source], flags)
}

/// The fake `libcuda.so.1` builds (sources under `host/tests/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeDriver {
    /// `fake_driver/libcuda.c`.
    Plain,
    /// `posted/fake_kernels.c`: the plain driver plus kernels that run on the host.
    PostedKernels,
    /// `fake_driver/libcuda.c` plus `fake_driver/nvml_extras.c` (PCI bus ids, primary context,
    /// memory info).
    NvmlExtras,
    /// `fake_driver/libcuda.c` plus `fake_driver/contexts.c` (primary and current contexts,
    /// kernel and function attributes; `FAKE_CUDA_CALLS` logs every call by name).
    Contexts,
    /// `fake_driver/graphs.c`: the plain driver plus graphs, stream capture, memory pools and
    /// link states that take any handle (the handle gate's tests).
    Graphs,
    /// `fake_driver/libcuda.c` plus `fake_driver/vmm.c` (VMM allocations counted by
    /// references, mappings).
    Vmm,
}

impl FakeDriver {
    /// The library, built once per test process.
    pub fn path(self) -> PathBuf {
        let (name, sources, extra): (&str, &[&str], &[&str]) = match self {
            Self::Plain => ("plain", &["fake_driver/libcuda.c"], &[]),
            Self::PostedKernels => ("posted", &["posted/fake_kernels.c"], &["-O2", "-lpthread"]),
            Self::NvmlExtras => (
                "nvml",
                &["fake_driver/libcuda.c", "fake_driver/nvml_extras.c"],
                &[],
            ),
            Self::Contexts => (
                "contexts",
                &["fake_driver/libcuda.c", "fake_driver/contexts.c"],
                &["-lpthread"],
            ),
            Self::Graphs => ("graphs", &["fake_driver/graphs.c"], &["-lpthread"]),
            Self::Vmm => (
                "vmm",
                &["fake_driver/libcuda.c", "fake_driver/vmm.c"],
                &["-lpthread"],
            ),
        };
        let sources: Vec<PathBuf> = sources
            .iter()
            .map(|s| root().join("host/tests").join(s))
            .collect();
        let flags = [&["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"], extra].concat();
        c_build(
            &format!("fake-driver-{name}/libcuda.so.1"),
            &sources,
            &flags,
        )
    }
}

/// The plain fake driver ([`FakeDriver::Plain`]).
pub fn fake_driver() -> PathBuf {
    FakeDriver::Plain.path()
}

/// Runs `scripts/<script>` (`--debug` in a debug test build) and returns the library path it
/// prints.
fn build_library(script: &str) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts").join(script));
    if cfg!(debug_assertions) {
        cmd.arg("--debug");
    }
    let out = cmd.output().expect("run a build script");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .expect("path"),
    )
}

/// The shim, `libvgpu-cuda.so` (`scripts/build-shim.sh`), built once per test process.
pub fn built_shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| build_library("build-shim.sh"))
}

/// The NVML facade, `libvgpu-nvml.so` (`scripts/build-nvml.sh`), built once per test process.
pub fn built_nvml() -> &'static Path {
    static NVML: OnceLock<PathBuf> = OnceLock::new();
    NVML.get_or_init(|| build_library("build-nvml.sh"))
}

/// `target/<profile>/vgpuctl`, next to this test's `deps/` folder (built when missing).
pub fn built_vgpuctl() -> &'static Path {
    static VGPUCTL: OnceLock<PathBuf> = OnceLock::new();
    VGPUCTL.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = profile_dir.join("vgpuctl");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "vgpuctl", "--bin", "vgpuctl"])
                .status()
                .expect("run cargo build -p vgpuctl");
            assert!(status.success() && bin.exists(), "cannot build vgpuctl");
        }
        bin
    })
}
