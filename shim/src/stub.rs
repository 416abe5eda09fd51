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
/// `CUDA_ERROR_UNKNOWN` and one log line; nothing unwinds into the caller. In trace mode
/// (`VGPU_TRACE`, see [`crate::trace`]) the call is logged with the arguments `describe` writes;
/// otherwise `describe` is never run and tracing costs one relaxed load.
pub fn guarded(
    name: &'static str,
    changes_context_state: bool,
    describe: impl FnOnce(&mut String),
    dispatch: impl FnOnce() -> CuResult,
) -> CUresult {
    ensure_init();
    let traced = crate::trace::Call::start(name, describe);
    let code = match catch_unwind(AssertUnwindSafe(|| in_stub(dispatch))) {
        Ok(result) => to_code(result),
        Err(payload) => {
            log!(
                Level::Error,
                "{name} panicked: {}",
                panic_message(&*payload)
            );
            to_code(Err(CuError::UNKNOWN))
        }
    };
    if changes_context_state {
        crate::local_cache::context_state_changed();
    }
    if let Some(call) = traced {
        if crate::posted::take_posted_note() && code == CUresult::CUDA_SUCCESS {
            call.finish_posted();
        } else {
            call.finish(code);
        }
    }
    code
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
            const CHANGES_CONTEXT_STATE: bool =
                $crate::local_cache::changes_context_state(stringify!($name));
            $crate::stub::guarded(stringify!($name), CHANGES_CONTEXT_STATE, |_out| {
                #[allow(unused_imports)]
                use $crate::trace::{ShowDebug as _, ShowOpaque as _};
                $( (&$crate::trace::Shown(&$p)).show(_out, stringify!($p)); )*
            }, || {
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
            const CHANGES_CONTEXT_STATE: bool =
                $crate::local_cache::changes_context_state(stringify!($name));
            $crate::stub::guarded(stringify!($name), CHANGES_CONTEXT_STATE, |_out| {
                #[allow(unused_imports)]
                use $crate::trace::{ShowDebug as _, ShowOpaque as _};
                $( (&$crate::trace::Shown(&$p)).show(_out, stringify!($p)); )*
            }, || {
                // SAFETY: the caller upholds the driver API contract, which the forwarder relies on.
                unsafe { $crate::forward::generated::$name($($p),*) }
            })
        }
    };
    (kind: default, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => {
        #[doc = concat!("`", stringify!($name), "`: not supported yet.")]
        ///
        /// # Safety
        /// Always safe: the arguments are only formatted (trace mode), never dereferenced.
        #[no_mangle]
        pub unsafe extern "system" fn $name($($p: $t),*) -> $ret {
            static REPORTED: ::std::sync::atomic::AtomicBool =
                ::std::sync::atomic::AtomicBool::new(false);
            $crate::stub::guarded(stringify!($name), false, |_out| {
                #[allow(unused_imports)]
                use $crate::trace::{ShowDebug as _, ShowOpaque as _};
                $( (&$crate::trace::Shown(&$p)).show(_out, stringify!($p)); )*
            }, || {
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
        let code = guarded("cuTestPanics", false, |_| {}, || panic!("boom"));
        assert_eq!(code, CUresult::CUDA_ERROR_UNKNOWN);
        let code = guarded(
            "cuTestPanicsWithString",
            false,
            |_| {},
            || panic!("{}", String::from("boom")),
        );
        assert_eq!(code, CUresult::CUDA_ERROR_UNKNOWN);
        assert_eq!(
            guarded("cuTestOk", false, |_| {}, || Ok(())),
            CUresult::CUDA_SUCCESS
        );
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
