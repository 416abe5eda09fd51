//! Snapshots of the stubs as the compiler expands them: a hand-written one (`cuInit`, which applies
//! CUDA_VISIBLE_DEVICES), a local one (`cuGetErrorString`), a forwarded one (`cuMemAlloc_v2`, the
//! generated marshalling) and a default one (`cuCheckpointProcessLock`, unsupported), taken from
//! the shim's macro-expanded source.
//!
//! The expansion comes from `cargo rustc -p shim --profile check -- -Zunpretty=expanded` with
//! `RUSTC_BOOTSTRAP=1`, as cargo-expand does on a stable toolchain. It uses a target directory of
//! its own, because that variable changes cargo's fingerprints and would otherwise make the next
//! regular build recompile the shim.

use std::process::Command;

use syn::{Item, ItemFn};
use vgpu_tests::workspace_root;

fn expanded_shim() -> syn::File {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "rustc",
            "--quiet",
            "-p",
            "shim",
            "--lib",
            "--profile",
            "check",
            "--target-dir",
        ])
        .arg(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("expand-target"))
        .arg("--")
        .arg("-Zunpretty=expanded")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(workspace_root())
        .output()
        .expect("run cargo rustc");
    assert!(
        output.status.success(),
        "expansion failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    syn::parse_file(&String::from_utf8(output.stdout).expect("UTF-8 expansion"))
        .expect("the expanded shim parses")
}

fn exported_fn(file: &syn::File, name: &str) -> ItemFn {
    let exports = file
        .items
        .iter()
        .find_map(|item| match item {
            Item::Mod(m) if m.ident == "exports" => m.content.as_ref().map(|(_, items)| items),
            _ => None,
        })
        .expect("mod exports in the expansion");
    exports
        .iter()
        .find_map(|item| match item {
            Item::Fn(f) if f.sig.ident == name => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{name} is not in the expansion"))
}

#[test]
fn expanded_stubs_snapshot() {
    let file = expanded_shim();
    let stubs = syn::File {
        shebang: None,
        attrs: Vec::new(),
        items: vec![
            Item::Fn(exported_fn(&file, "cuInit")),
            Item::Fn(exported_fn(&file, "cuGetErrorString")),
            Item::Fn(exported_fn(&file, "cuMemAlloc_v2")),
            Item::Fn(exported_fn(&file, "cuCheckpointProcessLock")),
        ],
    };
    let rendered = prettyplease::unparse(&stubs);
    assert!(rendered.contains("fn cuInit"), "empty rendering");
    insta::assert_snapshot!("expanded_stubs", rendered);
}
