//! Source rules that tests can state honestly.
//!
//! "No code path writes /etc/ld.so.preload except recover's removal of the shim's lines": every
//! write into it must go through `ld_so_preload::remove_shim_lines`. This test checks the source:
//! - only `src/ld_so_preload.rs` and the read-only users name the preload path;
//! - the file-writing primitives (`OpenOptions`, `File::create`, `fs::write`, `fsops::apply`) never
//!   appear in a module that names the preload path, except `ld_so_preload.rs`, where exactly one
//!   `.write(true)` exists, inside `remove_shim_lines`;
//! - `remove_shim_lines` is called only from `recover.rs`.
//!
//! It is a textual check (an alias or macro could evade it); the behavioural test
//! `no_command_writes_ld_so_preload` in `staged.rs` complements it.

use std::fs;
use std::path::Path;

const WRITERS: &[&str] = &[
    "OpenOptions",
    "File::create",
    "fs::write",
    "fsops::apply",
    "apply(",
];

#[test]
fn only_recover_writes_ld_so_preload() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() > 10, "source files not found");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(f).unwrap();
        let names_preload = text.contains("LD_SO_PRELOAD") || text.contains("ld.so.preload");
        if name == "ld_so_preload.rs" {
            assert_eq!(text.matches(".write(true)").count(), 1, "{name}");
            let fn_start = text.find("pub fn remove_shim_lines").unwrap();
            let write_at = text.find(".write(true)").unwrap();
            let next_fn = text[fn_start + 1..]
                .find("\nfn ")
                .map_or(usize::MAX, |i| i + fn_start);
            let next_pub = text[fn_start + 1..]
                .find("\npub fn ")
                .map_or(usize::MAX, |i| i + fn_start);
            assert!(
                write_at > fn_start && write_at < next_fn.min(next_pub),
                "write outside remove_shim_lines"
            );
            continue;
        }
        if names_preload {
            for w in WRITERS {
                let writes_preload = text.lines().any(|l| {
                    l.contains(w) && (l.contains("LD_SO_PRELOAD") || l.contains("ld.so.preload"))
                });
                assert!(
                    !writes_preload,
                    "{name}: a line both writes ({w}) and names ld.so.preload"
                );
            }
        }
        if text.contains("remove_shim_lines(") && name != "recover.rs" {
            panic!("{name} calls remove_shim_lines; only recover may");
        }
    }
}

#[test]
fn preload_path_constant_is_the_only_spelling_in_code() {
    // Code names the file only through paths::LD_SO_PRELOAD, so the check above sees every use.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in fs::read_dir(&src).unwrap().flatten() {
        let text = fs::read_to_string(e.path()).unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        for l in text.lines() {
            let code = l.split("//").next().unwrap_or("");
            if code.contains("\"/etc/ld.so.preload\"") {
                assert_eq!(name, "paths.rs", "{name}: spell it paths::LD_SO_PRELOAD");
            }
        }
    }
}
