//! How `vgpu-host` tells the vgpu shim from a CUDA driver. Both are `libcuda.so.1` and both export
//! the driver API, so the shim also exports one data symbol outside the `cu*` namespace, which no
//! NVIDIA library has. A host whose `--driver` (or library path) leads to the shim refuses it
//! instead of forwarding calls to itself.

/// The marker's symbol name as a string literal, for `#[export_name = …]` in the shim.
#[macro_export]
macro_rules! shim_marker_symbol {
    () => {
        "vgpu_shim_marker"
    };
}

/// The marker's symbol name.
pub const SYMBOL: &str = shim_marker_symbol!();

/// The marker's symbol name as a C string, for `dlsym`.
pub const SYMBOL_C: &std::ffi::CStr =
    match std::ffi::CStr::from_bytes_with_nul(concat!(shim_marker_symbol!(), "\0").as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("the marker name has no interior NUL"),
    };

/// What the marker holds: readable with `strings`, never read by the host (its presence is the
/// signal).
pub const CONTENTS: &[u8; 25] = b"vgpu shim, not libcuda.so";

#[cfg(test)]
mod tests {
    #[test]
    fn the_names_agree_and_stay_outside_the_driver_api() {
        assert_eq!(super::SYMBOL_C.to_str(), Ok(super::SYMBOL));
        assert!(!super::SYMBOL.starts_with("cu"));
    }
}
