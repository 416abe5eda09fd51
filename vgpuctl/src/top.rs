//! `vgpuctl top`: the host's clients, live, as `top` shows processes: GPU memory, call rate,
//! latency p50/p99, bytes copied per second each way. It reads the host's control socket
//! (`vgpu-host --control PATH`) every interval; rates and latencies are over the last interval.
//! `q` (or Esc, or Ctrl-C) quits. `--once` prints one table as plain text (two reports an
//! interval apart) for scripts and tests.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use host_report::{ClientReport, HostReport};

use crate::control_socket::read_report;
use crate::Error;

/// A report and when it was read.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// What it said.
    pub report: HostReport,
}

/// One client's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Guest pid.
    pub pid: u32,
    /// `region` or `tcp`.
    pub via: &'static str,
    /// Device memory held, bytes.
    pub memory: u64,
    /// Driver calls per second (none on the first report).
    pub calls_per_second: Option<f64>,
    /// Latency median and 99th percentile, seconds (bucket bounds).
    pub p50: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// Bytes per second to the GPU.
    pub htod_per_second: Option<f64>,
    /// Bytes per second from the GPU.
    pub dtoh_per_second: Option<f64>,
    /// Guest threads served.
    pub threads: u64,
    /// Streams.
    pub streams: u64,
    /// Queued requests.
    pub backlog: u64,
    /// Deferred errors so far.
    pub errors: u64,
    /// The client id (token, hex).
    pub client: String,
    /// Region path or peer address.
    pub place: String,
}

fn row(now: &ClientReport, before: Option<(&ClientReport, f64)>) -> Row {
    let rates = before.map(|(b, seconds)| now.rates_since(b, seconds));
    let latency = rates
        .as_ref()
        .map_or_else(|| now.latency.clone(), |r| r.latency.clone());
    Row {
        pid: now.pid,
        via: now.transport.word(),
        memory: now.gpu_memory_bytes,
        calls_per_second: rates.as_ref().map(|r| r.calls_per_second),
        p50: latency.quantile(0.5),
        p99: latency.quantile(0.99),
        htod_per_second: rates.as_ref().map(|r| r.htod_bytes_per_second),
        dtoh_per_second: rates.as_ref().map(|r| r.dtoh_bytes_per_second),
        threads: now.threads,
        streams: now.streams,
        backlog: now.posted_backlog,
        errors: now.deferred_errors,
        client: now.client.clone(),
        place: now
            .region
            .clone()
            .or_else(|| now.peer.clone())
            .unwrap_or_default(),
    }
}

/// The rows of `current`, with rates since `previous` where a client is in both.
pub fn rows(previous: Option<&Sample>, current: &Sample) -> Vec<Row> {
    current
        .report
        .clients
        .iter()
        .map(|c| {
            let before = previous.and_then(|p| {
                let seconds = current.at.saturating_duration_since(p.at).as_secs_f64();
                p.report
                    .clients
                    .iter()
                    .find(|b| b.client == c.client)
                    .map(|b| (b, seconds))
            });
            row(c, before)
        })
        .collect()
}

/// Bytes with a binary unit: `512 B`, `97.7 KiB`, `5.0 MiB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A latency bound: `8µs`, `1.0ms`, `>4.2s`, or `-` without calls.
pub fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s.is_infinite() => {
            let last = host_report::LATENCY_BOUNDS_US[host_report::LATENCY_BOUNDS_US.len() - 1];
            format!(">{:.1}s", last as f64 / 1e6)
        }
        Some(s) if s < 1e-3 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.1}s"),
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{}/s", bytes(r)))
}

fn calls(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"))
}

/// The column titles.
pub const TITLES: [&str; 14] = [
    "PID", "VIA", "GPU MEM", "CALLS/S", "P50", "P99", "HTOD/S", "DTOH/S", "THR", "STRM", "QUEUE",
    "ERR", "CLIENT", "WHERE",
];

/// A row's cells, in [`TITLES`] order.
pub fn cells(r: &Row) -> [String; 14] {
    [
        r.pid.to_string(),
        r.via.to_owned(),
        bytes(r.memory as f64),
        calls(r.calls_per_second),
        latency(r.p50),
        latency(r.p99),
        rate(r.htod_per_second),
        rate(r.dtoh_per_second),
        r.threads.to_string(),
        r.streams.to_string(),
        r.backlog.to_string(),
        r.errors.to_string(),
        r.client.clone(),
        r.place.clone(),
    ]
}

/// The line above the table: the host, its workers, its region.
pub fn summary(report: &HostReport) -> String {
    let up = report.uptime_seconds as u64;
    let mut line = format!(
        "vgpu-host pid {} · up {}h{:02}m{:02}s · {} client(s), {} spare",
        report.host_pid,
        up / 3600,
        up / 60 % 60,
        up % 60,
        report.workers,
        report.spares
    );
    if let Some(r) = &report.region {
        line.push_str(&format!(
            " · bulk {} of {} used",
            bytes(r.bulk_used_bytes as f64),
            bytes(r.bulk_bytes as f64)
        ));
    }
    if report.clients_refused > 0 {
        line.push_str(&format!(" · {} refused", report.clients_refused));
    }
    line
}

/// The table as plain text, columns padded to their widest cell.
pub fn render_text(report: &HostReport, rows: &[Row]) -> String {
    let table: Vec<[String; 14]> = std::iter::once(TITLES.map(str::to_owned))
        .chain(rows.iter().map(cells))
        .collect();
    let widths: Vec<usize> = (0..TITLES.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = summary(report);
    text.push('\n');
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn sample(path: &Path) -> Result<Sample, Error> {
    Ok(Sample {
        report: read_report(path)?,
        at: Instant::now(),
    })
}

/// `--once`: two reports `interval` apart, printed as one table.
///
/// # Errors
/// When the control socket cannot be read.
pub fn once(path: &Path, interval: Duration, out: &mut dyn Write) -> Result<i32, Error> {
    let first = sample(path)?;
    std::thread::sleep(interval);
    let second = sample(path)?;
    write!(
        out,
        "{}",
        render_text(&second.report, &rows(Some(&first), &second))
    )
    .ok();
    Ok(0)
}

/// The live view, until `q`.
///
/// # Errors
/// When the terminal cannot be set up, or the first report cannot be read.
pub fn live(path: &Path, interval: Duration) -> Result<i32, Error> {
    let first = sample(path)?;
    crate::top_screen::run(first, interval, || sample(path))
        .map_err(|e| Error::io("draw on", "the terminal", e))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_report::{Histogram, Transport, REPORT_VERSION};

    fn client(calls: u64, htod: u64) -> ClientReport {
        let mut latency = Histogram::default();
        latency.buckets[4] = calls;
        ClientReport {
            client: "00000000000000ab".into(),
            pid: 42,
            transport: Transport::Region,
            region: Some("/dev/shm/vgpu".into()),
            peer: None,
            worker_pid: 43,
            age_seconds: 1.0,
            counted: true,
            gpu_memory_bytes: 5 << 20,
            contexts: 1,
            modules: 1,
            streams: 2,
            events: 0,
            threads: 1,
            bulk_bytes: 0,
            posted_backlog: 0,
            calls: host_report::Calls {
                synchronous: calls,
                posted: calls,
                special: 1,
            },
            latency,
            copied: host_report::Copied {
                htod: host_report::PathBytes {
                    bulk: htod,
                    ..Default::default()
                },
                dtoh: Default::default(),
            },
            deferred_errors: 0,
            refusals: Default::default(),
        }
    }

    fn report(clients: Vec<ClientReport>) -> HostReport {
        HostReport {
            version: REPORT_VERSION,
            host_pid: 7,
            uptime_seconds: 3723.0,
            workers: clients.len() as u64,
            spares: 1,
            clients_refused: 0,
            region: None,
            clients,
        }
    }

    #[test]
    fn rates_come_from_two_reports_and_latency_from_the_interval() {
        let at = Instant::now();
        let first = Sample {
            at,
            report: report(vec![client(100, 0)]),
        };
        let second = Sample {
            at: at + Duration::from_secs(2),
            report: report(vec![client(300, 4 << 20)]),
        };
        let r = &rows(Some(&first), &second)[0];
        assert_eq!(r.calls_per_second, Some(200.0));
        assert_eq!(r.htod_per_second, Some((2 << 20) as f64));
        assert_eq!(r.p50, Some(16e-6));
        let alone = &rows(None, &second)[0];
        assert_eq!(alone.calls_per_second, None);
        let text = render_text(&second.report, &rows(Some(&first), &second));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("vgpu-host pid 7 · up 1h02m03s · 1 client(s), 1 spare"));
        assert!(
            lines[1].starts_with("PID  VIA     GPU MEM  CALLS/S  P50   P99"),
            "{text}"
        );
        assert!(lines[2].contains("5.0 MiB"), "{text}");
        assert!(lines[2].contains("2.0 MiB/s"), "{text}");
        assert!(lines[2].contains("16µs"), "{text}");
    }

    #[test]
    fn units_read_like_top() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(100_000.0), "97.7 KiB");
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(8e-6)), "8µs");
        assert_eq!(latency(Some(1.024e-3)), "1.0ms");
        assert_eq!(latency(Some(f64::INFINITY)), ">4.2s");
    }
}
