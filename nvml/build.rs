//! Link settings for the cdylib: the soname, and no DT_NEEDED beyond libc and the dynamic loader
//! (shared with the shim: `guest_cdylib::link`).

fn main() {
    // Loaded as `libnvidia-ml.so.1`: `dlopen("libnvidia-ml.so.1")` in a process that preloads
    // the facade returns the facade.
    guest_cdylib::link::preloadable_cdylib("libnvidia-ml.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
