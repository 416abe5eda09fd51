//! The shim's behaviour without a usable configuration: CUDA calls fail with
//! CUDA_ERROR_NOT_INITIALIZED (3) and one log line naming the cause; nothing crashes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use vgpu_tests::{compile_c, run_with_timeout, shim_library, Outcome};

fn cuda_probe() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config");
        compile_c(&scratch, "cuda_probe.c", "cuda_probe", &["-ldl"])
    })
}

fn probe(env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let mut command = Command::new(cuda_probe());
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", shim_library())
        .envs(env.iter().copied());
    run_with_timeout(command, Duration::from_secs(30))
}

fn single_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one log line, got {stderr:?}");
    lines[0]
}

#[test]
fn missing_configuration_gives_not_initialized_and_one_line() {
    let out = probe(&[], &["init", "3"]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout, "cuInit=3\ncuInit=3\ncuInit=3\n");
    let line = single_line(&out.stderr);
    assert!(
        line.contains("neither VGPU_REGION nor VGPU_HOST is set"),
        "{line}"
    );
}

#[test]
fn broken_configuration_names_the_cause() {
    let out = probe(&[("VGPU_HOST", "gpu-box")], &["init", "2"]);
    assert_eq!(out.stdout, "cuInit=3\ncuInit=3\n");
    let line = single_line(&out.stderr);
    assert!(
        line.contains("VGPU_HOST=\"gpu-box\" is not an ip:port address"),
        "{line}"
    );

    let out = probe(&[("VGPU_REGION", "relative/region")], &["init"]);
    assert_eq!(out.stdout, "cuInit=3\n");
    assert!(single_line(&out.stderr).contains("is not an absolute path"));

    // TCP without TLS settings, and without saying clear text is meant: refused before any
    // connection.
    let out = probe(&[("VGPU_HOST", "127.0.0.1:9")], &["init"]);
    assert_eq!(out.stdout, "cuInit=3\n");
    let line = single_line(&out.stderr);
    assert!(
        line.contains("VGPU_HOST needs VGPU_TLS_CA, VGPU_TLS_CERT and VGPU_TLS_KEY"),
        "{line}"
    );

    // TLS files that are not there: named, one line.
    let out = probe(
        &[
            ("VGPU_HOST", "127.0.0.1:9"),
            ("VGPU_TLS_CA", "/nonexistent/ca.pem"),
            ("VGPU_TLS_CERT", "/nonexistent/client.pem"),
            ("VGPU_TLS_KEY", "/nonexistent/client.key"),
        ],
        &["init", "2"],
    );
    assert_eq!(out.stdout, "cuInit=3\ncuInit=3\n");
    let line = single_line(&out.stderr);
    assert!(line.contains("/nonexistent/ca.pem"), "{line}");
}

#[test]
fn unreachable_host_is_not_initialized_with_one_line() {
    // Port 9 (discard) on loopback: nothing listens there, so the connection is refused.
    let out = probe(
        &[("VGPU_HOST", "127.0.0.1:9"), ("VGPU_TCP_CLEARTEXT", "1")],
        &["init", "2"],
    );
    assert_eq!(out.stdout, "cuInit=3\ncuInit=3\n");
    let line = single_line(&out.stderr);
    assert!(line.contains("vgpu host unreachable"), "{line}");
    assert!(line.contains("127.0.0.1:9"), "{line}");

    let out = probe(&[("VGPU_REGION", "/nonexistent/vgpu-region")], &["init"]);
    assert_eq!(out.stdout, "cuInit=3\n");
    assert!(single_line(&out.stderr).contains("cannot open region /nonexistent/vgpu-region"));
}

#[test]
fn vgpu_log_off_silences_everything() {
    let out = probe(&[("VGPU_LOG", "off")], &["init", "2"]);
    assert_eq!(out.stdout, "cuInit=3\ncuInit=3\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn local_calls_print_nothing_without_configuration() {
    let out = probe(&[], &[]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout == "rc=0 text=out of memory\n", "{}", out.stdout);
    assert_eq!(out.stderr, "");
}
