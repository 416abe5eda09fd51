//! Link settings for the cdylib: the soname, and no DT_NEEDED beyond libc and the dynamic loader
//! (shared with the NVML facade: `guest_cdylib::link`).

fn main() {
    // Loaded as `libcuda.so.1`: `dlopen("libcuda.so.1")` in a process that preloads the shim
    // returns the shim.
    guest_cdylib::link::preloadable_cdylib("libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
