//! The stub template that `shim_macros::cuda_functions!` instantiates for every driver function,
//! and the code every stub shares.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use cuda_headers::cu_result::to_code;
use cuda_headers::{CUresult, CuError, CuResult};

use crate::init::{ensure_init, host_transport, in_stub};
use crate::log::{log, Level};

/// Every stub's body: `ensure_init()`, the trace line's start, then `dispatch`, all inside
/// `catch_unwind`, then the context-state note and the trace line's end inside a second one. A
/// panic anywhere becomes `CUDA_ERROR_UNKNOWN` and one log line; nothing unwinds into the caller.
/// In trace mode (`VGPU_TRACE`, see [`crate::trace`]) the call is logged with the arguments
/// `describe` writes; otherwise `describe` is never run and tracing costs one relaxed load.
pub fn guarded(
    name: &'static str,
    changes_context_state: bool,
    describe: impl FnOnce(&mut String),
    dispatch: impl FnOnce() -> CuResult,
) -> CUresult {
    let mut traced = None;
    // `traced` is set before `dispatch` runs, so a call that panics is still traced.
    let result = contained(name, || {
        ensure_init();
        traced = crate::trace::Call::start(name, describe);
        dispatch()
    });
    let code = to_code(result);
    let finished = contained(name, || {
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
        Ok(())
    });
    match finished {
        Ok(()) => code,
        Err(error) => error.code(),
    }
}

/// Runs `body` with the in-stub flag set; a panic becomes `CUDA_ERROR_UNKNOWN` and one log line.
fn contained(name: &'static str, body: impl FnOnce() -> CuResult) -> CuResult {
    match catch_unwind(AssertUnwindSafe(|| in_stub(body))) {
        Ok(result) => result,
        Err(payload) => {
            report_panic(name, payload);
            Err(CuError::UNKNOWN)
        }
    }
}

/// Logs a caught panic, then drops its payload; a panic while doing either is swallowed, and its
/// own payload leaked, so that nothing can unwind out of a stub.
fn report_panic(name: &'static str, payload: Box<dyn Any + Send>) {
    let reported = catch_unwind(AssertUnwindSafe(|| {
        in_stub(|| {
            log!(
                Level::Error,
                "{name} panicked: {}",
                panic_message(&*payload)
            );
            drop(payload);
        });
    }));
    if let Err(nested) = reported {
        std::mem::forget(nested);
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

/// The template: one `#[no_mangle]` export per driver function, of one of three kinds.
///
/// - `kind: custom` (a guest half in the call table, `shim-macros/src/calls.rs`) calls
///   `crate::<guest module>::<name>(params…)`, an `unsafe fn` returning `CuResult`.
/// - `kind: forwarded` (the classifier marshals every parameter) calls the generated
///   `crate::forward::generated::<name>(params…)`, which sends call `id` to the host; `marshal`
///   says how each parameter travels and is used by that forwarder, not here.
/// - `kind: default` (neither) returns [`unsupported`].
macro_rules! stub {
    (kind: custom, name: $name:ident, guest: $($guest:ident)::+, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => {
        #[doc = concat!("`", stringify!($name), "`: answered by `", $(stringify!($guest), "::",)+ stringify!($name), "`.")]
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
                unsafe { $crate::$($guest)::+::$name($($p),*) }
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

    /// Set in the child process of [`a_panicking_describe_is_one_error_and_one_log_line`].
    const DESCRIBE_CHILD: &str = "VGPU_STUB_TEST_DESCRIBE_CHILD";

    /// Runs [`describe_panics_in_a_traced_call`] in a fresh process with tracing on, so that the
    /// `describe` closure runs, and reads its stderr: one log line, no panic message.
    #[test]
    fn a_panicking_describe_is_one_error_and_one_log_line() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "stub::tests::describe_panics_in_a_traced_call",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DESCRIBE_CHILD, "1")
            .env("VGPU_TRACE", "/dev/null")
            .env_remove("VGPU_LOG")
            .env_remove("VGPU_HOST")
            .env_remove("VGPU_REGION")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child test did not run: {stdout}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("vgpu-cuda[")
                && lines[0].ends_with(": error: cuTestDescribePanics panicked: describe failed"),
            "{stderr}"
        );
    }

    /// The child's side; does nothing in a normal test run.
    #[test]
    fn describe_panics_in_a_traced_call() {
        if std::env::var_os(DESCRIBE_CHILD).is_none() {
            return;
        }
        assert!(crate::trace::enabled());
        let mut dispatched = false;
        let code = guarded(
            "cuTestDescribePanics",
            false,
            |_| panic!("describe failed"),
            || {
                dispatched = true;
                Ok(())
            },
        );
        assert_eq!(code, CUresult::CUDA_ERROR_UNKNOWN);
        assert!(
            !dispatched,
            "the call must not run after its describe panicked"
        );
        let code = guarded("cuTestAfterwards", false, |_| {}, || Ok(()));
        assert_eq!(code, CUresult::CUDA_SUCCESS);
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
