//! The shim's ELF identity: soname, exact DT_NEEDED set, and the exported symbol set (the
//! signature list plus the shim marker).

use vgpu_tests::{dynamic_info, shim_library, workspace_root};

/// What the shim may need: libc and the dynamic loader, both mapped into every dynamically linked
/// process already. libgcc_s is kept out by linking libgcc_eh.a (shim/build.rs).
const ALLOWED_NEEDED: &[&str] = &["libc.so.6", "ld-linux-x86-64.so.2"];

#[test]
fn soname_is_libcuda_so_1() {
    let info = dynamic_info(shim_library());
    assert_eq!(info.soname.as_deref(), Some("libcuda.so.1"));
}

#[test]
fn needed_is_exactly_libc_and_the_loader() {
    let info = dynamic_info(shim_library());
    let mut needed = info.needed.clone();
    needed.sort();
    let mut allowed: Vec<String> = ALLOWED_NEEDED.iter().map(|s| (*s).to_owned()).collect();
    allowed.sort();
    assert_eq!(
        needed, allowed,
        "DT_NEEDED changed: a preloaded shim would add these mappings"
    );
}

#[test]
fn exported_symbols_snapshot() {
    let info = dynamic_info(shim_library());
    assert!(
        info.exports.len() > 600,
        "only {} exports",
        info.exports.len()
    );
    insta::assert_snapshot!("exported_symbols", info.exports.join("\n"));
}

#[test]
fn exports_are_exactly_the_signature_list_and_the_shim_marker() {
    let info = dynamic_info(shim_library());
    let listed: &[&str] = shim_macros::cuda_function_names!();
    assert!(!listed.is_empty());
    // The marker by which vgpu-host refuses the shim as its driver, outside the `cu*` namespace.
    let mut expected = listed.to_vec();
    expected.push(protocol::shim_marker::SYMBOL);
    expected.sort_unstable();
    assert_eq!(
        info.exports, expected,
        "every listed function is exported, plus the shim marker, and nothing else"
    );
}

#[test]
fn exports_cover_the_real_driver() {
    // A committed copy of shared/observed/libcuda-580.159.04-exports.txt (`nm -D --defined-only`
    // of the real driver), so that a clean clone can run this test; it must match the original
    // wherever the shared directory is present.
    let copy_path = workspace_root().join("tests/data/libcuda-580.159.04-exports.txt");
    let observed = std::fs::read_to_string(&copy_path)
        .unwrap_or_else(|e| panic!("{}: {e}", copy_path.display()));
    let original = workspace_root().join("../shared/observed/libcuda-580.159.04-exports.txt");
    if let Ok(text) = std::fs::read_to_string(&original) {
        assert_eq!(
            text,
            observed,
            "tests/data copy differs from {}",
            original.display()
        );
    }
    let observed: Vec<&str> = observed.split_whitespace().collect();
    assert_eq!(observed.len(), 674, "the observed list has 674 names");
    let exports = dynamic_info(shim_library()).exports;
    let missing: Vec<&str> = observed
        .iter()
        .copied()
        .filter(|name| exports.binary_search_by(|e| e.as_str().cmp(name)).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "missing exports of the real libcuda: {missing:?}"
    );
}
