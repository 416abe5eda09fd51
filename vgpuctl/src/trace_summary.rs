//! `vgpuctl trace-summary FILE`: what a `VGPU_TRACE` file says, per function: how many calls,
//! how many synchronous round trips to the host they made, how many were posted, and the time
//! spent in them (`vgpuctl run --trace-summary` prints it for the command it ran).
//!
//! A trace line (shim/src/trace.rs) reads
//! `vgpu-trace[PID:TID] NAME(ARGS) -> RESULT 14.20us rt=1 @0.532107`; `rt=` is left out when the
//! call made no round trip, and `RESULT` is `posted` for a posted call. Lines of other shapes
//! (lookups, table requests, log lines) are skipped.

use std::collections::HashMap;
use std::fmt::Write as _;

/// One traced call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function (or export-table slot) name.
    pub name: String,
    /// Whether it was posted.
    pub posted: bool,
    /// Time spent in the call, in microseconds.
    pub micros: f64,
    /// Synchronous round trips it made.
    pub round_trips: u64,
    /// When it started, in seconds since the traced process's first call.
    pub at: Option<f64>,
}

/// Reads one line; `None` for lines that are not a finished call.
pub fn parse_line(line: &str) -> Option<Call> {
    let rest = line.strip_prefix("vgpu-trace[")?;
    let rest = &rest[rest.find("] ")? + 2..];
    let name_end = rest.find(['(', ' '])?;
    let name = &rest[..name_end];
    let (_, tail) = rest.rsplit_once(" -> ")?;
    let mut words = tail.split(' ');
    let outcome = words.next()?;
    let micros: f64 = words.next()?.strip_suffix("us")?.parse().ok()?;
    let mut call = Call {
        name: name.to_owned(),
        posted: outcome == "posted",
        micros,
        round_trips: 0,
        at: None,
    };
    for word in words {
        if let Some(n) = word.strip_prefix("rt=") {
            call.round_trips = n.parse().ok()?;
        } else if let Some(t) = word.strip_prefix('@') {
            call.at = t.parse().ok();
        }
    }
    Some(call)
}

/// Totals for one function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Calls.
    pub calls: u64,
    /// Synchronous round trips.
    pub round_trips: u64,
    /// Posted calls.
    pub posted: u64,
    /// Time in the calls, microseconds.
    pub micros: f64,
}

/// Which calls count: those that started inside `[since, until)` seconds (calls without a time
/// count only when no bound is given).
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Lower bound, seconds.
    pub since: Option<f64>,
    /// Upper bound, seconds.
    pub until: Option<f64>,
}

impl Window {
    /// The span between the last two calls of `function` in `text` (e.g. the two
    /// synchronisations around a benchmark's timed run); `None` when it was called less than twice.
    pub fn last_between(text: &str, function: &str) -> Option<Self> {
        let mut times = text
            .lines()
            .filter_map(parse_line)
            .filter(|c| c.name == function)
            .filter_map(|c| c.at);
        let (mut before, mut last) = (None, None);
        for t in &mut times {
            before = last;
            last = Some(t);
        }
        Some(Window {
            since: Some(before?),
            until: last,
        })
    }

    fn holds(&self, call: &Call) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = call.at else { return false };
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

/// A summary of many lines.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Per function.
    pub rows: HashMap<String, Row>,
    /// First and last start time seen.
    pub span: Option<(f64, f64)>,
}

impl Summary {
    /// Summarises the lines of `text` inside `window`.
    pub fn of(text: &str, window: Window) -> Self {
        let mut s = Summary::default();
        for call in text.lines().filter_map(parse_line) {
            if !window.holds(&call) {
                continue;
            }
            if let Some(at) = call.at {
                s.span = Some(s.span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
            }
            let row = s.rows.entry(call.name).or_default();
            row.calls += 1;
            row.round_trips += call.round_trips;
            row.posted += u64::from(call.posted);
            row.micros += call.micros;
        }
        s
    }

    /// All functions together.
    pub fn total(&self) -> Row {
        self.rows.values().fold(Row::default(), |mut t, r| {
            t.calls += r.calls;
            t.round_trips += r.round_trips;
            t.posted += r.posted;
            t.micros += r.micros;
            t
        })
    }

    /// The table, busiest first (by round trips, then time); counts divided by `per` when it
    /// names a function that was called (one step per call of it, e.g. a decode step's
    /// synchronisation).
    pub fn render(&self, per: Option<&str>, limit: usize) -> String {
        let steps = per
            .and_then(|name| self.rows.get(name))
            .map_or(1.0, |r| r.calls.max(1) as f64);
        let mut rows: Vec<(&String, &Row)> = self.rows.iter().collect();
        rows.sort_by(|a, b| {
            b.1.round_trips
                .cmp(&a.1.round_trips)
                .then(b.1.micros.total_cmp(&a.1.micros))
                .then(a.0.cmp(b.0))
        });
        let mut out = String::new();
        let unit = if steps > 1.0 || per.is_some() {
            format!(
                " (per step: {} calls of {})",
                steps,
                per.unwrap_or_default()
            )
        } else {
            String::new()
        };
        let _ = writeln!(out, "vgpu trace summary{unit}");
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>10} {:>12} {:>10}",
            "function", "calls", "round trips", "posted", "time ms", "mean us"
        );
        let line = |out: &mut String, name: &str, r: &Row| {
            let _ = writeln!(
                out,
                "{:<44} {:>10} {:>10} {:>10} {:>12.3} {:>10.2}",
                name,
                fmt_count(r.calls as f64 / steps),
                fmt_count(r.round_trips as f64 / steps),
                fmt_count(r.posted as f64 / steps),
                r.micros / 1e3 / steps,
                r.micros / r.calls.max(1) as f64
            );
        };
        for (name, r) in rows.iter().take(limit) {
            line(&mut out, name, r);
        }
        if rows.len() > limit {
            let _ = writeln!(out, "… {} more functions", rows.len() - limit);
        }
        line(&mut out, "TOTAL", &self.total());
        if let Some((a, b)) = self.span {
            let _ = writeln!(
                out,
                "window: {:.6} s to {:.6} s ({:.3} ms{})",
                a,
                b,
                (b - a) * 1e3 / steps,
                if steps > 1.0 { " per step" } else { "" }
            );
        }
        out
    }
}

fn fmt_count(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
vgpu-trace[7:7] cuInit(Flags=0) -> CUDA_SUCCESS 968.00us rt=2 @0.000000
vgpu-trace[7:7] cuGetProcAddress cuInit version=2000 flags=0 -> cuInit 0x7f40dee1e620
vgpu-trace[7:7] cuCtxGetDevice_v2(device=0x7ffe, ctx=0x0) -> CUDA_SUCCESS 0.61us rt=1 @0.100000
vgpu-trace[7:7] cuCtxGetDevice_v2(device=0x7ffe, ctx=0x0) -> CUDA_SUCCESS 0.05us @0.100100
vgpu-trace[7:8] cuLaunchKernel(f=0x1, kernelParams=0x2, extra=0x0) -> posted 0.70us @0.100200
vgpu-trace[7:7] tools-tls[2]() -> CUDA_SUCCESS 0.10us @0.100300
vgpu-trace[7:7] cuStreamSynchronize(hStream=0x0) -> CUDA_ERROR_ILLEGAL_ADDRESS 5.00us rt=1 @0.200000
vgpu-cuda[7]: warn: something else
";

    #[test]
    fn reads_the_lines_the_shim_writes() {
        let c = parse_line(
            "vgpu-trace[7:8] cuLaunchKernel(f=0x1, extra=0x0) -> posted 0.70us @0.100200",
        )
        .unwrap();
        assert_eq!(
            c,
            Call {
                name: "cuLaunchKernel".into(),
                posted: true,
                micros: 0.7,
                round_trips: 0,
                at: Some(0.1002)
            }
        );
        let c = parse_line("vgpu-trace[1:1] cuMemAlloc_v2(dptr=0x7f, bytesize=4096) -> CUDA_SUCCESS 14.20us rt=1 @0.5")
            .unwrap();
        assert_eq!((c.round_trips, c.posted), (1, false));
        // An argument holding " -> " does not confuse it: the last arrow is the result's.
        let c = parse_line("vgpu-trace[1:1] cuX(s=\"a -> b\") -> CUDA_SUCCESS 1.00us @1").unwrap();
        assert_eq!(c.micros, 1.0);
        assert!(parse_line("vgpu-trace[1:1] cuGetExportTable 6bd5 -> cudart 0x7f").is_none());
        assert!(parse_line("vgpu-cuda[1]: warn: x").is_none());
    }

    #[test]
    fn sums_per_function_and_window() {
        let s = Summary::of(TRACE, Window::default());
        assert_eq!(s.rows.len(), 5);
        let g = &s.rows["cuCtxGetDevice_v2"];
        assert_eq!((g.calls, g.round_trips, g.posted), (2, 1, 0));
        assert_eq!(s.rows["cuLaunchKernel"].posted, 1);
        let t = s.total();
        assert_eq!((t.calls, t.round_trips, t.posted), (6, 4, 1));
        assert_eq!(s.span, Some((0.0, 0.2)));

        let w = Summary::of(
            TRACE,
            Window {
                since: Some(0.1),
                until: Some(0.2),
            },
        );
        assert_eq!(w.total().calls, 4);
        let between = Window::last_between(TRACE, "cuCtxGetDevice_v2").unwrap();
        assert_eq!((between.since, between.until), (Some(0.1), Some(0.1001)));
        assert_eq!(Summary::of(TRACE, between).total().calls, 1);
        assert!(Window::last_between(TRACE, "cuInit").is_none());
        assert!(!w.rows.contains_key("cuInit"));
        assert!(!w.rows.contains_key("cuStreamSynchronize"));
    }

    #[test]
    fn renders_per_step() {
        let s = Summary::of(TRACE, Window::default());
        let text = s.render(Some("cuCtxGetDevice_v2"), 10);
        assert!(text.starts_with("vgpu trace summary (per step: 2 calls of cuCtxGetDevice_v2)"));
        let row = text.lines().find(|l| l.starts_with("cuInit")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1..4], ["0.5", "1", "0"], "{row}");
        let first = text.lines().nth(2).unwrap();
        assert!(
            first.starts_with("cuInit"),
            "most round trips first: {text}"
        );
        assert!(text.lines().any(|l| l.starts_with("TOTAL")));
    }
}
