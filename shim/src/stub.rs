//! The stub template that `shim_macros::cuda_functions!` instantiates for every driver function,
//! and the code every stub shares.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use cuda_headers::cu_result::to_code;
use cuda_headers::{CUresult, CuError, CuResult};

use crate::init::{ensure_init, host_transport, in_stub};
use crate::log::{log, Level};

/// Every stub's body: `ensure_init()`, then `dispatch` inside `catch_unwind`. A panic becomes
/// `CUDA_ERROR_UNKNOWN` and one log line; nothing unwinds into the caller.
pub fn guarded(name: &'static str, dispatch: impl FnOnce() -> CuResult) -> CUresult {
    ensure_init();
    match catch_unwind(AssertUnwindSafe(|| in_stub(dispatch))) {
        Ok(result) => to_code(result),
        Err(payload) => {
            log!(
                Level::Error,
                "{name} panicked: {}",
                panic_message(&*payload)
            );
            to_code(Err(CuError::UNKNOWN))
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// The default dispatch of a function nobody handles yet: `CUDA_ERROR_NOT_SUPPORTED`, logged once
/// per function. It needs the host, so a missing configuration gives `CUDA_ERROR_NOT_INITIALIZED`.
///
/// # Errors
/// Always: `CUDA_ERROR_NOT_INITIALIZED` or `CUDA_ERROR_NOT_SUPPORTED`.
pub fn unsupported(name: &'static str, reported: &AtomicBool) -> CuResult {
    host_transport()?;
    // No ordering needed: the flag only deduplicates a log line.
    if !reported.swap(true, Ordering::Relaxed) {
        log!(
            Level::Warn,
            "{name} is not supported yet (CUDA_ERROR_NOT_SUPPORTED)"
        );
    }
    Err(CuError::NOT_SUPPORTED)
}

/// The template: one `#[no_mangle]` export per driver function.
///
/// - `kind: custom` calls `crate::handlers::<name>(params…)`, an `unsafe fn` returning `CuResult`.
/// - `kind: default` returns [`unsupported`].
macro_rules! stub {
    (kind: custom, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => {
        #[doc = concat!("`", stringify!($name), "`: answered by `handlers::", stringify!($name), "`.")]
        ///
        /// # Safety
        /// The caller upholds the CUDA driver API's contract for this function.
        #[no_mangle]
        pub unsafe extern "system" fn $name($($p: $t),*) -> $ret {
            $crate::stub::guarded(stringify!($name), || {
                // SAFETY: the caller upholds the driver API contract, which the handler relies on.
                unsafe { $crate::handlers::$name($($p),*) }
            })
        }
    };
    (kind: forwarded, name: $name:ident, id: $id:expr, params: ($($p:ident: $t:ty),*),
     marshal: $marshal:tt, ret: $ret:ty) => {
        #[doc = concat!("`", stringify!($name), "`: forwarded to the host by generated marshalling.")]
        ///
        /// # Safety
        /// The caller upholds the CUDA driver API's contract for this function.
        #[no_mangle]
        pub unsafe extern "system" fn $name($($p: $t),*) -> $ret {
            $crate::stub::guarded(stringify!($name), || {
                // SAFETY: the caller upholds the driver API contract, which the forwarder relies on.
                unsafe { $crate::forward::generated::$name($($p),*) }
            })
        }
    };
    (kind: default, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => {
        #[doc = concat!("`", stringify!($name), "`: not supported yet.")]
        ///
        /// # Safety
        /// Always safe: the arguments are not read.
        #[no_mangle]
        pub unsafe extern "system" fn $name($($p: $t),*) -> $ret {
            static REPORTED: ::std::sync::atomic::AtomicBool =
                ::std::sync::atomic::AtomicBool::new(false);
            let _ = ($($p,)*);
            $crate::stub::guarded(stringify!($name), || {
                $crate::stub::unsupported(stringify!($name), &REPORTED)
            })
        }
    };
}
pub(crate) use stub;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_cuda_error_unknown() {
        let code = guarded("cuTestPanics", || panic!("boom"));
        assert_eq!(code, CUresult::CUDA_ERROR_UNKNOWN);
        let code = guarded("cuTestPanicsWithString", || {
            panic!("{}", String::from("boom"))
        });
        assert_eq!(code, CUresult::CUDA_ERROR_UNKNOWN);
        assert_eq!(guarded("cuTestOk", || Ok(())), CUresult::CUDA_SUCCESS);
    }

    #[test]
    fn unsupported_needs_a_configured_host() {
        let reported = AtomicBool::new(false);
        let expected = match &ensure_init().transport {
            Ok(_) => CuError::NOT_SUPPORTED,
            Err(_) => CuError::NOT_INITIALIZED,
        };
        assert_eq!(unsupported("cuTestUnsupported", &reported), Err(expected));
    }
}
