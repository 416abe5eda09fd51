//! The operator's view end to end (issue 14): a scripted guest workload (tests/operator/
//! workload.c, with the shim preloaded) against the real `vgpu-host` serving the fake driver
//! with its host-side kernels; `/metrics` is scraped and every per-client counter checked
//! against the workload, the control socket's JSON agrees, and a killed client's series
//! disappear. `vgpuctl top` is checked under tmux against the same workload.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::procs::signal;
use support::{built_vgpuctl, c_build, root, tmp, FakeDriver, Host};

/// The workload program.
fn workload() -> PathBuf {
    c_build(
        "operator-workload",
        &[root().join("host/tests/operator/workload.c")],
        &["-O2", "-ldl"],
    )
}

/// A host with the fake kernels, a 16 MiB region, a 16 MiB memory quota per client, metrics on
/// a free port and a control socket.
fn start_host(tag: &str) -> (Host, PathBuf) {
    let control = tmp(&format!("{tag}.sock"));
    let host = Host::on_region(tag)
        .driver(FakeDriver::PostedKernels)
        .region_size(16 << 20)
        .args(["--metrics", "127.0.0.1:0", "--client-memory-mib", "16"])
        .args(["--control".as_ref(), control.as_os_str()])
        .start();
    (host, control)
}

/// Starts the workload and waits for its "ready" line; it holds everything until killed.
fn start_workload(host: &Host) -> Child {
    start_workload_by(host.client(&workload()))
}

/// [`start_workload`] from a prepared command (a region or a TCP client).
fn start_workload_by(mut command: std::process::Command) -> Child {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the workload");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read the workload");
    assert_eq!(line.trim(), "ready", "the workload failed: {line}");
    child
}

/// `GET /metrics`: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to /metrics");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_owned()
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("label");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().expect("a number"))
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

/// Scrapes until `done` holds for the samples (gauges are published every 100 ms).
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = samples(&scrape(addr));
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The control socket's JSON.
fn control_report(path: &Path) -> serde_json::Value {
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    serde_json::from_str(&text).expect("JSON")
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn metrics_follow_a_scripted_workload_and_end_with_its_client() {
    let (host, control) = start_host("metrics");
    let mut client = start_workload(&host);
    let pid = client.id().to_string();
    let me = [("pid", pid.as_str())];
    let s = scrape_until(host.metrics(), "the workload's memory published", |s| {
        s.iter().any(|(n, l, v)| {
            n == "vgpu_client_gpu_memory_bytes" && l.get("pid") == Some(&pid) && *v == 5.0 * MIB
        })
    });
    let region = host.region().display().to_string();
    let labels = &s
        .iter()
        .find(|(n, l, _)| n == "vgpu_client_gpu_memory_bytes" && l.get("pid") == Some(&pid))
        .expect("the client's memory")
        .1;
    assert_eq!(labels.get("region"), Some(&region));
    assert_eq!(labels.get("client").map(String::len), Some(16));
    let v = |name: &str, extra: &[(&str, &str)]| value(&s, name, &[&me[..], extra].concat());
    assert_eq!(v("vgpu_client_contexts", &[]), 1.0);
    assert_eq!(v("vgpu_client_modules", &[]), 1.0);
    assert_eq!(v("vgpu_client_streams", &[]), 2.0);
    assert_eq!(v("vgpu_client_events", &[]), 1.0);
    assert_eq!(v("vgpu_client_threads", &[]), 1.0);
    assert_eq!(v("vgpu_client_calls_total", &[("class", "posted")]), 101.0);
    let synchronous = v("vgpu_client_calls_total", &[("class", "synchronous")]);
    assert!(synchronous >= 20.0, "{synchronous}");
    assert_eq!(
        v("vgpu_client_call_latency_seconds_count", &[]),
        synchronous,
        "every synchronous call timed once"
    );
    assert_eq!(
        v("vgpu_client_call_latency_seconds_bucket", &[("le", "+Inf")]),
        synchronous
    );
    assert!(v("vgpu_client_call_latency_seconds_sum", &[]) > 0.0);
    for (direction, path, bytes) in [
        ("htod", "inline", 1000.0),
        ("htod", "bulk", 100_000.0),
        ("htod", "zero_copy", 65536.0),
        ("htod", "stream", 0.0),
        ("dtoh", "inline", 2000.0),
        ("dtoh", "bulk", 150_000.0),
        ("dtoh", "zero_copy", 32768.0),
        ("dtoh", "stream", 0.0),
    ] {
        assert_eq!(
            v(
                "vgpu_client_copied_bytes_total",
                &[("direction", direction), ("path", path)]
            ),
            bytes,
            "{direction} {path}"
        );
    }
    assert_eq!(v("vgpu_client_deferred_errors_total", &[]), 1.0);
    assert_eq!(
        v(
            "vgpu_client_quota_refusals_total",
            &[("resource", "memory")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "vgpu_client_quota_refusals_total",
            &[("resource", "contexts")]
        ),
        0.0
    );
    assert_eq!(v("vgpu_client_posted_backlog", &[]), 0.0);
    // The pinned 64 KiB is one 64 KiB bulk block of the client's.
    assert_eq!(v("vgpu_client_bulk_bytes", &[]), 65536.0);
    assert_eq!(value(&s, "vgpu_host_workers", &[("state", "client")]), 1.0);
    assert_eq!(value(&s, "vgpu_host_workers", &[("state", "spare")]), 1.0);
    assert!(value(&s, "vgpu_host_uptime_seconds", &[]) > 0.0);
    assert!(
        value(
            &s,
            "vgpu_host_region_bulk_used_bytes",
            &[("region", &region)]
        ) >= 65536.0
    );
    let worker = host.worker_of(client.id()).to_string();
    let info = value(
        &s,
        "vgpu_client_info",
        &[
            ("pid", &pid),
            ("transport", "region"),
            ("worker_pid", &worker),
        ],
    );
    assert_eq!(info, 1.0);

    // The control socket says the same.
    let json = control_report(&control);
    let clients = json["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1, "{json}");
    assert_eq!(clients[0]["pid"].as_u64(), Some(u64::from(client.id())));
    assert_eq!(clients[0]["gpu_memory_bytes"].as_u64(), Some(5 << 20));
    assert_eq!(clients[0]["calls"]["posted"].as_u64(), Some(101));
    assert_eq!(clients[0]["copied"]["htod"]["bulk"].as_u64(), Some(100_000));

    // Killed: its worker goes, and its series with it.
    signal(client.id(), libc::SIGKILL);
    client.wait().expect("reap the workload");
    let s = scrape_until(host.metrics(), "the killed client's series gone", |s| {
        !s.iter()
            .any(|(n, l, _)| n.starts_with("vgpu_client") && l.get("pid") == Some(&pid))
    });
    assert_eq!(value(&s, "vgpu_host_workers", &[("state", "client")]), 0.0);
    let json = control_report(&control);
    assert_eq!(json["clients"].as_array().map(Vec::len), Some(0), "{json}");
    host.assert_no_panic();
}

#[test]
fn a_tcp_clients_bytes_travel_the_stream_and_it_is_labelled_by_its_peer() {
    let control = tmp("tcp.sock");
    let host = Host::without_region()
        .driver(FakeDriver::PostedKernels)
        .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--client-memory-mib", "16", "--control"])
        .args([control.as_os_str()])
        .start();
    let mut client = start_workload_by(host.tcp_client(&workload()));
    let pid = client.id().to_string();
    let s = scrape_until(host.metrics(), "the tcp client's memory published", |s| {
        s.iter().any(|(n, l, v)| {
            n == "vgpu_client_gpu_memory_bytes" && l.get("pid") == Some(&pid) && *v == 5.0 * MIB
        })
    });
    let me = [("pid", pid.as_str()), ("peer", "127.0.0.1"), ("region", "")];
    let v = |name: &str, extra: &[(&str, &str)]| value(&s, name, &[&me[..], extra].concat());
    // Pinned memory is ordinary guest memory over TCP: every copy ships its bytes.
    for (direction, bytes) in [
        ("htod", 1000.0 + 100_000.0 + 65536.0),
        ("dtoh", 2000.0 + 150_000.0 + 32768.0),
    ] {
        assert_eq!(
            v(
                "vgpu_client_copied_bytes_total",
                &[("direction", direction), ("path", "stream")]
            ),
            bytes,
            "{direction}"
        );
        for path in ["inline", "bulk", "zero_copy"] {
            assert_eq!(
                v(
                    "vgpu_client_copied_bytes_total",
                    &[("direction", direction), ("path", path)]
                ),
                0.0
            );
        }
    }
    assert_eq!(v("vgpu_client_info", &[("transport", "tcp")]), 1.0);
    assert_eq!(v("vgpu_client_calls_total", &[("class", "posted")]), 101.0);
    assert_eq!(v("vgpu_client_bulk_bytes", &[]), 0.0);
    assert!(
        !s.iter().any(|(n, _, _)| n.starts_with("vgpu_host_region")),
        "a host without a region reports none"
    );
    signal(client.id(), libc::SIGKILL);
    client.wait().expect("reap the workload");
    // The worker outlives its last connection by --tcp-grace-ms (2 s), then the series end.
    scrape_until(host.metrics(), "the tcp client's series gone", |s| {
        !s.iter()
            .any(|(n, l, _)| n.starts_with("vgpu_client") && l.get("pid") == Some(&pid))
    });
}

#[test]
fn the_endpoints_refuse_what_they_do_not_serve() {
    let (host, control) = start_host("endpoints");
    let mut stream = TcpStream::connect(host.metrics()).expect("connect");
    write!(stream, "GET /other HTTP/1.1\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A silent peer holds the endpoint for its timeout at most; the next scrape is answered.
    let silent = TcpStream::connect(host.metrics()).expect("connect");
    let body = scrape(host.metrics());
    assert!(body.contains("vgpu_host_uptime_seconds"), "{body}");
    drop(silent);
    // Owner-only control socket; a second host cannot take it while this one answers.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&control)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = support::host::command()
        .arg("--driver")
        .arg(FakeDriver::Plain.path())
        .arg("--region")
        .arg(support::host::unique_region("endpoints-2"))
        .arg("--control")
        .arg(&control)
        .output()
        .expect("run a second host");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    drop(host);
    assert!(!control.exists(), "the control socket outlived its host");
}

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(tag: &str) -> Self {
        Self {
            socket: tmp(&format!("tmux-{tag}.sock")),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux (scripts/install-test-deps.sh installs it)")
    }

    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
fn vgpuctl_top_shows_the_clients_memory_under_tmux() {
    let (host, control) = start_host("top");
    let mut client = start_workload(&host);
    let pid = client.id().to_string();
    let tmux = Tmux::new("top");
    let command = format!(
        "{} top --control {} --interval 0.2",
        built_vgpuctl().display(),
        control.display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "20",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let screen = loop {
        let screen = tmux.screen("top");
        let row = screen.lines().find(|l| l.starts_with(&pid));
        if row.is_some_and(|r| r.contains("5.0 MiB") && r.contains("/dev/shm/")) {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed the client:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("PID"), "{screen}");
    assert!(screen.contains("GPU MEM"), "{screen}");
    assert!(screen.contains("1 client(s), 1 spare"), "{screen}");
    // `q` quits: the session ends with its only command.
    assert!(tmux.run(&["send-keys", "-t", "top", "q"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    while tmux.run(&["has-session", "-t", "top"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "top ignored q:\n{}",
            tmux.screen("top")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The plain-text mode and `smi --host` list the same client.
    let once = std::process::Command::new(built_vgpuctl())
        .args(["top", "--once", "--interval", "0.1", "--control"])
        .arg(&control)
        .output()
        .expect("vgpuctl top --once");
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success(), "{once:?}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&pid))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("5.0 MiB"), "{text}");
    let smi = std::process::Command::new(built_vgpuctl())
        .args(["smi", "--host", "--control"])
        .arg(&control)
        .output()
        .expect("vgpuctl smi --host");
    let text = String::from_utf8_lossy(&smi.stdout);
    let worker = host.worker_of(client.id()).to_string();
    let row = text
        .lines()
        .find(|l| l.starts_with(&pid))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("5 MiB") && row.contains(&worker), "{text}");
    signal(client.id(), libc::SIGKILL);
    client.wait().expect("reap the workload");
}
