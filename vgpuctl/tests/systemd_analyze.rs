//! The generated units pass `systemd-analyze verify` with empty stderr.
//!
//! systemd 252's `verify --root=` cannot find `sysinit.target` in a bare staged root, so the unit
//! is verified by path: systemd then reads the drop-in directory next to it, and checks that
//! `ExecStart=` binaries exist on this machine (so the test units point them at `/bin/true`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const ANALYZE: &str = "/usr/bin/systemd-analyze";

fn analyze(unit: &Path) -> Option<(bool, String)> {
    if !Path::new(ANALYZE).exists() {
        println!("SKIP: {ANALYZE} is absent (install the `systemd` package to run this check)");
        return None;
    }
    let out = Command::new(ANALYZE)
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn service_dropin_passes_systemd_analyze_verify() {
    for (tag, extra) in [("plain", None), ("envfile", Some("/etc/default/ollama"))] {
        let t = staged_ollama(&format!("analyze-{tag}"));
        if let Some(f) = extra {
            put(
                t.path(),
                "/etc/systemd/system/ollama.service.d/20-env.conf",
                &format!("[Service]\nEnvironmentFile=-{f}\n"),
            );
            put(t.path(), f, "LD_PRELOAD=/opt/x.so\n");
        }
        let r = root_arg(&t);
        let ran = vgpuctl(&[
            "--root",
            &r,
            "install",
            "--region",
            "/sys/bus/pci/devices/0000:00:05.0/resource2",
        ]);
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        let Some((ok, stderr)) = analyze(&t.path().join("etc/systemd/system/ollama.service"))
        else {
            return;
        };
        assert!(ok, "{tag}: {stderr}");
        assert_eq!(stderr, "", "{tag}");
    }
}

#[test]
fn host_unit_passes_systemd_analyze_verify() {
    let t = TempDir::new("analyze-host");
    let r = root_arg(&t);
    assert_eq!(
        vgpuctl(&[
            "--root",
            &r,
            "host",
            "install",
            "--bin",
            "/bin/true",
            "--metrics",
            "127.0.0.1:9464"
        ])
        .code,
        0
    );
    let Some((ok, stderr)) = analyze(&t.path().join("etc/systemd/system/vgpu-host@vm1.service"))
    else {
        return;
    };
    assert!(ok, "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn analyze_reads_the_dropin_so_a_bad_one_would_be_caught() {
    // Control: the same setup with a broken key in the drop-in directory does produce stderr,
    // so the empty stderr above means the drop-in was read and accepted.
    let t = staged_ollama("analyze-control");
    put(
        t.path(),
        "/etc/systemd/system/ollama.service.d/vgpu.conf",
        "[Service]\nEnviroment=LD_PRELOAD=/x.so\n",
    );
    let Some((_, stderr)) = analyze(&t.path().join("etc/systemd/system/ollama.service")) else {
        return;
    };
    assert!(stderr.contains("Unknown key 'Enviroment'"), "{stderr}");
}
