//! Link settings for the cdylib: the soname, and no DT_NEEDED beyond libc and the dynamic loader
//! (the same rules as `shim/build.rs`).
use std::path::Path;
use std::process::Command;

fn main() {
    // Loaded as `libnvidia-ml.so.1`: `dlopen("libnvidia-ml.so.1")` in a process that preloads
    // the facade returns the facade.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    link_unwinder_statically();
    println!("cargo:rerun-if-changed=build.rs");
}

/// Links gcc's static unwinder (`libgcc_eh.a`) ahead of std's `-lgcc_s`, so that a preloaded
/// facade does not add `libgcc_s.so.1` to every process (see `shim/build.rs`).
fn link_unwinder_statically() {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let Ok(output) = Command::new(&compiler)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        println!("cargo:warning=cannot run {compiler}: libgcc_s.so.1 stays a dependency");
        return;
    };
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let archive = Path::new(&printed);
    match archive.parent() {
        Some(dir) if archive.is_absolute() && archive.is_file() => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:+verbatim,-bundle=libgcc_eh.a");
        }
        _ => println!("cargo:warning=libgcc_eh.a not found: libgcc_s.so.1 stays a dependency"),
    }
}
