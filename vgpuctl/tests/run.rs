//! `vgpuctl run` and `vgpuctl smi` end to end without a GPU: the real `vgpu-host` (built by
//! `cargo test -p host -p vgpuctl`, or built here when missing) loads a fake `libcuda.so.1`
//! (host/tests/fake_driver/libcuda.c, built with `cc`) found through `LD_LIBRARY_PATH`. The
//! same fake library stands in for the shim, so `smi`'s probe reads the fake's answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn fake_driver_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("vgpuctl-fake-cuda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/tests/fake_driver/libcuda.c");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(dir.join("libcuda.so.1"))
            .arg(&src)
            .status()
            .expect("run cc (install a C compiler)");
        assert!(status.success(), "cc failed building the fake driver");
        dir
    })
}

fn fake_driver() -> PathBuf {
    fake_driver_dir().join("libcuda.so.1")
}

/// `target/<profile>/vgpu-host`, next to this test's `deps/` folder.
fn host_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = profile_dir.join("vgpu-host");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "host", "--bin", "vgpu-host"])
                .status()
                .expect("run cargo build -p host");
            assert!(status.success() && bin.exists(), "cannot build vgpu-host");
        }
        bin
    })
}

fn vgpuctl(args: &[&str], devices: &str) -> Output {
    vgpuctl_spinning(args, devices, None)
}

/// As [`vgpuctl`], with `VGPU_SPIN_US` set to `spin` (unset when `None`).
fn vgpuctl_spinning(args: &[&str], devices: &str, spin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
    cmd.args(args)
        .env("LD_LIBRARY_PATH", fake_driver_dir())
        .env("FAKE_CUDA_DEVICES", devices)
        .env_remove("LD_PRELOAD")
        .env_remove("VGPU_HOST_LOG")
        .env_remove("RUST_LOG")
        .env_remove("VGPU_SPIN_US");
    if let Some(us) = spin {
        cmd.env("VGPU_SPIN_US", us);
    }
    cmd.output().expect("run vgpuctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_forwards_the_exit_code_and_removes_its_region() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let shim = shim.to_str().expect("utf-8 path");
    let out = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim,
            "--no-nvml",
            "--",
            "sh",
            "-c",
            "echo $VGPU_REGION; echo $LD_PRELOAD; test -e $VGPU_REGION && echo present; exit 7",
        ],
        "1",
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("/dev/shm/vgpu-run-"), "{stdout}");
    assert_eq!(lines[1], shim);
    assert_eq!(
        lines[2], "present",
        "the region did not exist while CMD ran"
    );
    assert!(
        !Path::new(lines[0]).exists(),
        "region {} left behind",
        lines[0]
    );
}

#[test]
fn the_host_sees_every_gpu_whatever_the_command_hides() {
    // CUDA_VISIBLE_DEVICES is the guest's to apply (the shim does); the fake driver, like the
    // real one, hides every device when it is empty. The host must not inherit it.
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args([
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8"),
            "--",
        ])
        .args(["sh", "-c", "echo visible=[$CUDA_VISIBLE_DEVICES]"])
        .env("LD_LIBRARY_PATH", fake_driver_dir())
        .env("FAKE_CUDA_DEVICES", "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run vgpuctl");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "visible=[]",
        "the command keeps its own setting"
    );
}

#[test]
fn run_reports_death_by_signal_as_128_plus_signal() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let out = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8 path"),
            "--",
            "sh",
            "-c",
            "kill -9 $$",
        ],
        "1",
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
}

#[test]
fn run_without_a_gpu_says_so_in_one_line_and_runs_nothing() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let marker = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vgpuctl-run-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let touch = format!("touch {}", marker.display());
    let out = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8 path"),
            "--",
            "sh",
            "-c",
            &touch,
        ],
        "0",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no CUDA-capable GPU"), "{stderr}");
    assert!(!marker.exists(), "CMD ran without a GPU");
}

#[test]
fn run_with_a_missing_region_refuses_in_one_line() {
    let shim = fake_driver();
    let out = vgpuctl(
        &[
            "run",
            "--region",
            "/dev/shm/vgpu-no-such-region",
            "--shim",
            shim.to_str().expect("utf-8 path"),
            "--",
            "true",
        ],
        "1",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn smi_lists_the_devices_the_preloaded_library_reports() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let out = vgpuctl(
        &[
            "smi",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8 path"),
        ],
        "2",
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("GPU"), "{stdout}");
    for (i, uuid) in [
        (0, "GPU-10111213-1415-1617-1819-1a1b1c1d1e1f"),
        (1, "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f"),
    ] {
        let row = lines[1 + i];
        assert!(row.starts_with(&format!("{i}  ")), "{row}");
        assert!(row.contains("Fake GPU"), "{row}");
        assert!(row.contains(uuid), "{row}");
        assert!(row.contains("81920 MiB"), "{row}");
        assert!(row.ends_with("9.0"), "{row}");
    }
}

#[test]
fn smi_without_a_gpu_is_one_line_and_non_zero() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let out = vgpuctl(
        &[
            "smi",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8 path"),
        ],
        "0",
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn run_preloads_the_nvml_facade_after_the_shim() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let shim = shim.to_str().expect("utf-8 path");
    // Any existing file stands in for the facade: only LD_PRELOAD's value is looked at.
    let facade = shim;
    let out = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim,
            "--nvml",
            facade,
            "--",
            "sh",
            "-c",
            "echo $LD_PRELOAD",
        ],
        "1",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("{shim}:{facade}"));
    let missing = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim,
            "--nvml",
            "/nonexistent/libvgpu-nvml.so",
            "--",
            "true",
        ],
        "1",
    );
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("NVML facade /nonexistent/libvgpu-nvml.so not found"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn run_with_trace_summary_traces_the_command_and_summarises_it() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    // The fake stands in for the shim, so the command writes the trace lines itself, as the
    // shim would (VGPU_TRACE names the file).
    let script = "for i in 1 2 3; do \
        echo \"vgpu-trace[1:1] cuCtxGetDevice(device=0x1) -> CUDA_SUCCESS 0.50us rt=1 @0.$i\" >> \"$VGPU_TRACE\"; \
        echo \"vgpu-trace[1:1] cuLaunchKernel(f=0x2) -> posted 0.70us @0.$i\" >> \"$VGPU_TRACE\"; done";
    let out = vgpuctl(
        &[
            "run",
            "--host-bin",
            &host,
            "--shim",
            shim.to_str().expect("utf-8"),
            "--no-nvml",
            "--trace-summary",
            "--",
            "sh",
            "-c",
            script,
        ],
        "1",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let row = |name: &str| -> Vec<String> {
        stderr
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{stderr}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("cuCtxGetDevice")[1..4], ["3", "3", "0"], "{stderr}");
    assert_eq!(row("cuLaunchKernel")[1..4], ["3", "0", "3"], "{stderr}");
    assert_eq!(row("TOTAL")[1..4], ["6", "3", "3"], "{stderr}");
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("trace: "))
        .expect("the trace file is named");
    assert!(Path::new(kept).exists(), "{kept}");
    std::fs::remove_file(kept).ok();
}

#[test]
fn run_spins_a_millisecond_unless_told_otherwise() {
    let host = host_bin().to_str().expect("utf-8 path").to_owned();
    let shim = fake_driver();
    let shim = shim.to_str().expect("utf-8 path");
    let args = [
        "run",
        "--host-bin",
        &host,
        "--shim",
        shim,
        "--no-nvml",
        "--",
        "sh",
        "-c",
        "echo $VGPU_SPIN_US",
    ];
    let run = |spin: Option<&str>| {
        let out = vgpuctl_spinning(&args, "1", spin);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(run(None), "1000");
    assert_eq!(run(Some("50")), "50");
}
