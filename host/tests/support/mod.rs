//! What the end-to-end tests in `host/tests/*.rs` share (each includes it with `mod support;`):
//! building the C pieces and the guest libraries ([`compile`]), running `vgpu-host` on the fake
//! driver and guests against it ([`host`]), finding processes through `/proc` ([`procs`]), and
//! the raw wire protocol: the HELLO frame and a guest without the shim ([`wire`]).
// Each test binary uses only part of this module (and of its re-exports).
#![allow(dead_code, unused_imports)]

pub mod compile;
pub mod host;
pub mod procs;
pub mod wire;

use std::path::{Path, PathBuf};

pub use compile::{
    built_nvml, built_shim, built_vgpuctl, c_build, c_program, cc, fake_driver, FakeDriver,
};
pub use host::{run_client, ClientOutput, Host};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `name` in this test process's own scratch directory (parent directories are created).
pub fn tmp(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("host-tests-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("tmp dir");
    path
}
