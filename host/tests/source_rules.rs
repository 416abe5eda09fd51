//! Source rules of the host that a review would otherwise have to remember.
//!
//! **The handle gate is the only way in.** A guest value becomes a handle of a gated kind (a
//! stream, event, function, kernel, module, library, graph, graph node, executable graph, memory
//! pool, link state, context, array, … : `shim-macros/src/gate.rs`, `HANDLE_TYPES`) only through
//! `host/src/dispatch/gate.rs`, which checks it
//! against the handles the driver gave that client. Anywhere else, a cast to one of these types
//! (`v as CUstream`, `v as usize as CUfunction`, `as *mut CUstream_st`) would hand the driver a
//! value nobody checked. Generated calls get the gate from `shim-macros/src/gate.rs`.

use std::path::{Path, PathBuf};

/// The gated handle types: the typedefs and the structs they point to.
const GATED: &[&str] = &[
    "CUstream",
    "CUevent",
    "CUfunction",
    "CUkernel",
    "CUmodule",
    "CUlibrary",
    "CUgraph",
    "CUgraphExec",
    "CUgraphNode",
    "CUmemoryPool",
    "CUlinkState",
    "CUcontext",
    "CUgreenCtx",
    "CUdevResourceDesc",
    "CUarray",
    "CUmipmappedArray",
    "CUexternalMemory",
    "CUexternalSemaphore",
    "CUgraphicsResource",
    "CUeglStreamConnection",
    "CUtexref",
    "CUsurfref",
    "CUuserObject",
    "CUasyncCallbackHandle",
    "CUlogsCallbackHandle",
    "CUstream_st",
    "CUevent_st",
    "CUfunc_st",
    "CUkern_st",
    "CUmod_st",
    "CUlib_st",
    "CUgraph_st",
    "CUgraphExec_st",
    "CUgraphNode_st",
    "CUmemPoolHandle_st",
    "CUlinkState_st",
    "CUctx_st",
    "CUgreenCtx_st",
    "CUdevResourceDesc_st",
    "CUarray_st",
    "CUmipmappedArray_st",
    "CUextMemory_st",
    "CUextSemaphore_st",
    "CUgraphicsResource_st",
    "CUeglStreamConnection_st",
    "CUtexref_st",
    "CUsurfref_st",
    "CUuserObject_st",
    "CUasyncCallbackEntry_st",
    "CUlogsCallbackEntry_st",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The gated type a line casts to, if any: `as T`, `as usize as T`, `as *mut T`, `as *const T`.
fn cast_to_gated(line: &str) -> Option<&'static str> {
    let code = line.split("//").next().unwrap_or("");
    let mut rest = code;
    while let Some(at) = rest.find(" as ") {
        let target = rest[at + 4..].trim_start();
        let target = target
            .strip_prefix("*mut ")
            .or_else(|| target.strip_prefix("*const "))
            .unwrap_or(target)
            .trim_start();
        let name: String = target
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(t) = GATED.iter().find(|t| **t == name) {
            return Some(t);
        }
        rest = &rest[at + 4..];
    }
    None
}

#[test]
fn only_the_gate_turns_values_into_gated_handles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let gate = src.join("dispatch").join("gate.rs");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut found = Vec::new();
    for file in files.iter().filter(|f| **f != gate) {
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if let Some(t) = cast_to_gated(line) {
                found.push(format!(
                    "{}:{}: cast to {t}: {}",
                    file.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "guest values cast to gated handle types outside the gate (use the gate's accessors, \
         host/src/dispatch/gate.rs):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_rule_sees_the_casts_it_forbids() {
    assert_eq!(
        cast_to_gated("let s = stream as CUstream;"),
        Some("CUstream")
    );
    assert_eq!(
        cast_to_gated("f(v as usize as CUfunction)"),
        Some("CUfunction")
    );
    assert_eq!(
        cast_to_gated("let e = x as *mut CUevent_st;"),
        Some("CUevent_st")
    );
    assert_eq!(
        cast_to_gated("let n = v as usize as CUgraphNode;"),
        Some("CUgraphNode")
    );
    assert_eq!(
        cast_to_gated("pool(handle as usize as CUmemoryPool)"),
        Some("CUmemoryPool")
    );
    assert_eq!(
        cast_to_gated("let c = x as usize as CUcontext;"),
        Some("CUcontext")
    );
    assert_eq!(cast_to_gated("let a = x as CUarray;"), Some("CUarray"));
    assert_eq!(cast_to_gated("let d = x as CUdevice;"), None);
    assert_eq!(cast_to_gated("let f = x as CUarray_format;"), None);
    assert_eq!(cast_to_gated("let t = x as CUgraphNodeType;"), None);
    assert_eq!(
        cast_to_gated("enc.put(s as u64); // not v as CUstream"),
        None
    );
    assert_eq!(cast_to_gated("let m = x as CUmoduleLoadingMode;"), None);
}
