//! Link settings for a guest cdylib, printed by its `build.rs`: the soname it is loaded as, and
//! no `DT_NEEDED` beyond libc and the dynamic loader.
//!
//! ```no_run
//! // in build.rs's main:
//! guest_cdylib::link::preloadable_cdylib("libcuda.so.1");
//! println!("cargo:rerun-if-changed=build.rs");
//! ```

use std::path::Path;
use std::process::Command;

/// Prints the cargo instructions for a library loaded as `soname` (a process that preloads it
/// and then calls `dlopen(soname)` gets the preloaded library) that adds nothing but itself to
/// the processes it is preloaded into: see [`link_unwinder_statically`].
pub fn preloadable_cdylib(soname: &str) {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    link_unwinder_statically();
}

/// std's unwinder comes from `libgcc_s.so.1`, which a preloaded library would then add to every
/// process. Linking gcc's static unwinder (`libgcc_eh.a`, what `gcc -static-libgcc` uses) ahead
/// of std's `-lgcc_s` resolves the `_Unwind_*` symbols first, and `--as-needed` then drops
/// libgcc_s. If the compiler (`CC`, else `cc`) does not know the archive, the build keeps
/// libgcc_s with a cargo warning (and the preload test, which pins the exact NEEDED set, says
/// so).
pub fn link_unwinder_statically() {
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
