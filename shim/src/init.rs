//! `ensure_init()`: the one-time, lazy initialisation every stub runs first.
//!
//! It reads the environment and nothing else: no files, sockets, threads or mappings, and it
//! prints nothing. A broken configuration is remembered and reported (once) only when a call
//! actually needs the host, so a process that only asks `cuGetErrorString` stays silent.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};

use cuda_headers::{CuError, CuResult};

use crate::config::{self, ConfigError, Transport};
use crate::log::{self, log, Level};

/// What initialisation found.
#[derive(Debug)]
pub struct State {
    /// The transport to the host, or why there is none.
    pub transport: Result<Transport, ConfigError>,
}

static STATE: OnceLock<State> = OnceLock::new();
static CAUSE_REPORTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while a stub's body runs, so the panic hook can tell our panics from the application's.
    static IN_STUB: Cell<bool> = const { Cell::new(false) };
}

/// Initialises the shim on first call; afterwards returns the same state at the cost of one load.
pub fn ensure_init() -> &'static State {
    STATE.get_or_init(|| {
        // First, so that a panic in what follows is logged by the stub alone.
        install_panic_hook();
        log::level();
        State {
            transport: config::transport_from_env(),
        }
    })
}

/// The transport, for calls that need the host.
///
/// # Errors
/// `CUDA_ERROR_NOT_INITIALIZED` when the configuration is missing or broken; the first such call
/// logs one line naming the cause.
pub fn host_transport() -> CuResult<&'static Transport> {
    match &ensure_init().transport {
        Ok(transport) => Ok(transport),
        Err(cause) => {
            // No ordering needed: the flag only deduplicates a log line.
            if !CAUSE_REPORTED.swap(true, Ordering::Relaxed) {
                log!(
                    Level::Error,
                    "CUDA calls return CUDA_ERROR_NOT_INITIALIZED: {cause}"
                );
            }
            Err(CuError::NOT_INITIALIZED)
        }
    }
}

/// Runs `body` with the in-stub flag set, restoring it afterwards (also when `body` unwinds).
pub fn in_stub<R>(body: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_STUB.with(|flag| flag.set(self.0));
        }
    }
    let _reset = Reset(IN_STUB.with(|flag| flag.replace(true)));
    body()
}

/// Wraps the current panic hook, once per process, so that panics inside stubs print nothing (the
/// stub logs one line itself); all other panics go to the previous hook unchanged. Once, because a
/// panic inside the initialisation leaves `STATE` unset and the next call initialises again.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    if std::thread::panicking() {
        return;
    }
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_STUB.with(Cell::get) {
                previous(info);
            }
        }));
    });
}
