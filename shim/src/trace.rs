//! Trace mode: `VGPU_TRACE=1` (stderr) or `VGPU_TRACE=/path/file` logs every exported call with
//! its arguments, result name and duration, plus `cuGetProcAddress` lookups, `cuGetExportTable`
//! UUIDs and export-table slot calls.
//!
//! The variable is read at the first call that asks, never in a constructor; the file is opened
//! at the first line written. When tracing is off, each call costs one relaxed atomic load.
//!
//! Line format (one `write` per line, so concurrent threads never interleave within a line):
//! `vgpu-trace[<pid>:<tid>] cuMemAlloc_v2(dptr=0x7ffd5c1c2a40, bytesize=4096) -> CUDA_SUCCESS 14.20us rt=1 @0.532107`:
//! the result (a posted call, see [`crate::posted`], shows `posted`), the time spent in the
//! call, the synchronous round trips to the host it made (`rt=`, left out when none), and when
//! it started, in seconds since the process's first traced call. `vgpuctl trace-summary`
//! reads these lines.

use std::fmt::{Debug, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use cuda_headers::CUresult;

use crate::log::{log, Level};

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Whether tracing is on: `UNKNOWN` until the first call reads `VGPU_TRACE`.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Where trace lines go.
#[derive(Debug)]
enum Sink {
    Stderr,
    File(File),
}

/// The sink, opened on the first line written.
static SINK: OnceLock<Option<Mutex<Sink>>> = OnceLock::new();

/// What `VGPU_TRACE` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Tracing is off (unset, empty or `0`).
    Off,
    /// Lines go to stderr (`1`).
    Stderr,
    /// Lines are appended to this file (any other value).
    File(std::path::PathBuf),
}

impl Target {
    /// Interprets a `VGPU_TRACE` value.
    pub fn parse(value: Option<&std::ffi::OsStr>) -> Self {
        match value {
            None => Self::Off,
            Some(v) if v.is_empty() || v == "0" => Self::Off,
            Some(v) if v == "1" => Self::Stderr,
            Some(v) => Self::File(v.into()),
        }
    }
}

fn target() -> Target {
    Target::parse(std::env::var_os("VGPU_TRACE").as_deref())
}

/// Whether calls are traced. After the first call: one relaxed load.
#[inline]
pub fn enabled() -> bool {
    // No ordering needed: the state only ever moves from UNKNOWN to a fixed value, and both racing
    // initialisers compute the same value from the same environment.
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => initialise(),
    }
}

#[cold]
fn initialise() -> bool {
    let on = target() != Target::Off;
    // No ordering needed: see `enabled`.
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
    on
}

fn open_sink() -> Option<Mutex<Sink>> {
    match target() {
        Target::Off => None,
        Target::Stderr => Some(Mutex::new(Sink::Stderr)),
        Target::File(path) => match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => Some(Mutex::new(Sink::File(file))),
            Err(e) => {
                log!(
                    Level::Error,
                    "VGPU_TRACE: cannot open {}: {e}; tracing to stderr",
                    path.display()
                );
                Some(Mutex::new(Sink::Stderr))
            }
        },
    }
}

fn thread_id() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Writes one line (the prefix and newline are added). Errors are ignored: tracing must never
/// change what the application sees.
pub fn write_line(body: &str) {
    let Some(sink) = SINK.get_or_init(open_sink) else {
        return;
    };
    let line = format!(
        "vgpu-trace[{}:{}] {body}\n",
        std::process::id(),
        thread_id()
    );
    let mut sink = match sink.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let _ = match &mut *sink {
        Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
        Sink::File(file) => file.write_all(line.as_bytes()),
    };
}

/// Writes a formatted line if tracing is on.
pub fn event(message: std::fmt::Arguments<'_>) {
    if enabled() {
        write_line(&message.to_string());
    }
}

/// Appends `name=value` (with a leading `, ` after the first) to an argument list.
pub fn arg<T: Debug>(out: &mut String, name: &str, value: &T) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    let _ = write!(out, "{name}={value:?}");
}

/// An argument to show: with `Debug` when its type has it ([`ShowDebug`]), otherwise by size
/// ([`ShowOpaque`]). Call as `(&Shown(&value)).show(out, name)` with both traits in scope:
/// method lookup picks `ShowDebug` first and falls back to `ShowOpaque` through autoref.
#[derive(Debug)]
pub struct Shown<'a, T>(pub &'a T);

/// Shows a `Debug` argument (raw pointers print as hex).
pub trait ShowDebug {
    /// Appends `name=value`.
    fn show(&self, out: &mut String, name: &str);
}

impl<T: Debug> ShowDebug for Shown<'_, T> {
    fn show(&self, out: &mut String, name: &str) {
        arg(out, name, self.0);
    }
}

/// Shows an argument without `Debug` (a C struct passed by value) as its size.
pub trait ShowOpaque {
    /// Appends `name=<N-byte value>`.
    fn show(&self, out: &mut String, name: &str);
}

impl<T> ShowOpaque for &Shown<'_, T> {
    fn show(&self, out: &mut String, name: &str) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{name}=<{}-byte value>", std::mem::size_of::<T>());
    }
}

/// The name of a result code, or its number when the driver does not name it.
pub fn result_name(code: CUresult) -> String {
    cuda_headers::results::lookup(code.0)
        .and_then(|r| r.name.to_str().ok())
        .map_or_else(|| format!("CUresult({})", code.0), str::to_owned)
}

/// A call being traced: created before the call, finished with its result.
#[derive(Debug)]
pub struct Call {
    name: &'static str,
    args: String,
    start: Instant,
    round_trips: u64,
}

/// When the first traced call started: trace times are seconds since then.
static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Call {
    /// Starts tracing a call when tracing is on; `describe` writes its arguments.
    #[inline]
    pub fn start(name: &'static str, describe: impl FnOnce(&mut String)) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let mut args = String::new();
        describe(&mut args);
        let start = Instant::now();
        EPOCH.get_or_init(|| start);
        Some(Self {
            name,
            args,
            start,
            round_trips: crate::channel::round_trips(),
        })
    }

    /// Writes the call's line.
    pub fn finish(self, result: CUresult) {
        self.finish_as(&result_name(result));
    }

    /// Writes the line of a call that was posted (sent without waiting for its result):
    /// `-> posted`.
    pub fn finish_posted(self) {
        self.finish_as("posted");
    }

    fn finish_as(self, outcome: &str) {
        let micros = self.start.elapsed().as_secs_f64() * 1e6;
        let at = EPOCH
            .get()
            .map_or(0.0, |e| self.start.duration_since(*e).as_secs_f64());
        let round_trips = crate::channel::round_trips().saturating_sub(self.round_trips);
        let rt = if round_trips > 0 {
            format!(" rt={round_trips}")
        } else {
            String::new()
        };
        write_line(&format!(
            "{}({}) -> {outcome} {micros:.2}us{rt} @{at:.6}",
            self.name, self.args
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use super::{ShowDebug as _, ShowOpaque as _};

    #[test]
    fn parses_the_variable() {
        assert_eq!(Target::parse(None), Target::Off);
        assert_eq!(Target::parse(Some("".as_ref())), Target::Off);
        assert_eq!(Target::parse(Some("0".as_ref())), Target::Off);
        assert_eq!(Target::parse(Some("1".as_ref())), Target::Stderr);
        assert_eq!(
            Target::parse(Some("/tmp/t.log".as_ref())),
            Target::File("/tmp/t.log".into())
        );
    }

    #[test]
    fn formats_arguments_and_results() {
        let mut out = String::new();
        arg(&mut out, "count", &3i32);
        arg(&mut out, "ptr", &(0x1000usize as *const u8));
        assert_eq!(out, "count=3, ptr=0x1000");
        struct Opaque([u8; 12]);
        let opaque = Opaque([0; 12]);
        let mut out = String::new();
        (&Shown(&opaque)).show(&mut out, "frame");
        #[allow(clippy::needless_borrow)]
        (&Shown(&7u64)).show(&mut out, "n");
        assert_eq!(out, "frame=<12-byte value>, n=7");
        let _ = opaque.0;
        assert_eq!(result_name(CUresult::CUDA_SUCCESS), "CUDA_SUCCESS");
        assert_eq!(
            result_name(CUresult::CUDA_ERROR_NOT_FOUND),
            "CUDA_ERROR_NOT_FOUND"
        );
        assert_eq!(result_name(CUresult(123_456)), "CUresult(123456)");
    }
}
