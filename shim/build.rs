//! Link settings for the cdylib: the soname, and no DT_NEEDED beyond libc and the dynamic loader.
use std::path::Path;
use std::process::Command;

fn main() {
    // Loaded as `libcuda.so.1`: `dlopen("libcuda.so.1")` in a process that preloads the shim
    // returns the shim.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    link_unwinder_statically();
    println!("cargo:rerun-if-changed=build.rs");
}

/// std's unwinder comes from `libgcc_s.so.1`, which a preloaded library would then add to every
/// process. Linking gcc's static unwinder (`libgcc_eh.a`, what `gcc -static-libgcc` uses) ahead of
/// std's `-lgcc_s` resolves the `_Unwind_*` symbols first, and `--as-needed` then drops
/// libgcc_s. If the compiler does not know the archive, the build keeps libgcc_s (and the
/// preload test, which pins the exact NEEDED set, says so).
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
