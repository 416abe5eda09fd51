//! Every function of the real driver as a function pointer of its signature-list type, resolved
//! by name on first use (the raw layer; [`super::result`] wraps the calls the host makes itself).
//!
//! `real::cuX()` returns the real `cuX`, or `None` when the driver lacks it (or is not loaded
//! yet, see [`super::load`]). Generated for every function, so no caller spells a signature twice.

#![allow(non_snake_case, unused_imports, clippy::type_complexity)]

use cuda_headers::supplement::*;
use cuda_headers::*;

/// The template `shim_macros::cuda_functions!` fills: one resolver per function, whatever its
/// kind on the guest side.
macro_rules! resolver {
    (kind: $kind:ident, name: $name:ident, $(id: $id:expr,)? params: ($($p:ident: $t:ty),*),
     $(marshal: $marshal:tt,)? ret: $ret:ty) => {
        #[doc = concat!("The real `", stringify!($name), "`.")]
        pub fn $name() -> Option<unsafe extern "system" fn($($t),*) -> $ret> {
            static ADDRESS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
            // Not cached until the driver is loaded.
            let driver = super::loaded()?;
            let address = *ADDRESS.get_or_init(|| {
                let name = concat!(stringify!($name), "\0");
                std::ffi::CStr::from_bytes_with_nul(name.as_bytes())
                    .ok()
                    .and_then(|name| driver.symbol(name))
                    .map_or(0, |p| p as usize)
            });
            // SAFETY: the address is the driver's export of this very name, whose C signature
            // the signature list gives.
            (address != 0).then(|| unsafe {
                std::mem::transmute::<usize, unsafe extern "system" fn($($t),*) -> $ret>(address)
            })
        }
    };
}

shim_macros::cuda_functions!(resolver);
