//! `verify` against real processes: one with the (test-built) shim preloaded, one without.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use vgpuctl::checklist::{Checklist, Mark};
use vgpuctl::procfs;
use vgpuctl::verify::check_processes;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // The `sleep` children first (by pid), then the shell.
        for k in procfs::descendants(Path::new("/proc"), self.0.id()) {
            let _ = Command::new("kill").arg(k.to_string()).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sh -c 'sleep 60 & wait'` (a parent with a child), optionally with LD_PRELOAD.
fn spawn(preload: Option<&Path>) -> Killed {
    let mut c = Command::new("sh");
    c.args(["-c", "sleep 60 & wait"]);
    if let Some(p) = preload {
        c.env("LD_PRELOAD", p);
    }
    Killed(c.spawn().unwrap())
}

/// Waits until `pid` has a child that has exec'd `sleep` and whose loader has mapped its
/// libraries (libc is there, so an `LD_PRELOAD` library, mapped before it, is too): `comm`
/// changes at exec, before the loader runs, and a check in between saw no shim.
fn wait_for_child(pid: u32) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(&k) = procfs::descendants(Path::new("/proc"), pid).first() {
            let loaded = std::fs::read_to_string(format!("/proc/{k}/maps"))
                .is_ok_and(|maps| maps.contains("libc"));
            if procfs::comm(Path::new("/proc"), k).as_deref() == Some("sleep") && loaded {
                return k;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "child of {pid} never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fake_shim(t: &TempDir) -> std::path::PathBuf {
    let lib = t.path().join("libvgpu-cuda.so");
    build_so(&lib, Some("libcuda.so.1"));
    lib
}

fn mark(list: &Checklist, id: &str) -> Mark {
    list.get(id)
        .unwrap_or_else(|| panic!("no check {id}: {list:?}"))
        .mark
}

#[test]
fn maps_logic_tells_preloaded_from_plain_process_and_reports_pid1() {
    let t = TempDir::new("procs");
    let lib = fake_shim(&t);
    let with = spawn(Some(&lib));
    let without = spawn(None);
    let (with_pid, without_pid) = (with.0.id(), without.0.id());
    let with_child = wait_for_child(with_pid);
    wait_for_child(without_pid);
    let proc_dir = Path::new("/proc");

    assert_eq!(procfs::maps_shim(proc_dir, with_pid, &lib), Ok(true));
    assert_eq!(procfs::maps_shim(proc_dir, with_child, &lib), Ok(true));
    assert_eq!(procfs::maps_shim(proc_dir, without_pid, &lib), Ok(false));

    let mut list = Checklist::default();
    check_processes(proc_dir, with_pid, &lib, &mut list);
    assert_eq!(mark(&list, "main"), Mark::Pass);
    assert_eq!(mark(&list, "children"), Mark::Pass, "{list:?}");

    let mut list = Checklist::default();
    check_processes(proc_dir, without_pid, &lib, &mut list);
    assert_eq!(mark(&list, "main"), Mark::Fail);
    assert_eq!(mark(&list, "children"), Mark::Fail);

    // PID 1: whatever it is in this sandbox, the verdict must match its actual maps.
    let pid1 = fs::read_to_string("/proc/1/maps");
    let expected = match &pid1 {
        Ok(m) if m.contains(&lib.display().to_string()) => Mark::Fail,
        Ok(_) => Mark::Pass,
        Err(_) => Mark::Fail,
    };
    assert_eq!(mark(&list, "pid1"), expected, "{pid1:?}");
}

#[test]
fn pid1_check_fails_when_pid1_maps_the_shim() {
    // A staged /proc whose PID 1 maps the shim, and an sshd that does too.
    let t = TempDir::new("fakeproc");
    let proc_dir = t.path().join("proc");
    let line = "7f0000000000-7f0000001000 r-xp 00000000 08:01 1234  /usr/lib64/libvgpu-cuda.so\n";
    for (pid, ppid, comm, maps) in [
        (1, 0, "systemd", line),
        (50, 1, "sshd", line),
        (60, 1, "ollama", line),
        (
            61,
            60,
            "ollama_runner",
            "7f00-7f01 r-xp 0 0:0 0 /usr/lib/libc.so.6\n",
        ),
    ] {
        let d = proc_dir.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("maps"), maps).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 1 1 0\n")).unwrap();
    }
    let mut list = Checklist::default();
    check_processes(
        &proc_dir,
        60,
        Path::new("/usr/lib64/libvgpu-cuda.so"),
        &mut list,
    );
    assert_eq!(mark(&list, "main"), Mark::Pass);
    assert_eq!(mark(&list, "children"), Mark::Fail);
    assert!(list
        .get("children")
        .unwrap()
        .message
        .contains("61 (ollama_runner)"));
    assert_eq!(mark(&list, "pid1"), Mark::Fail);
    assert_eq!(mark(&list, "sshd"), Mark::Fail);
}

#[test]
fn full_verify_over_real_processes_and_canned_systemd() {
    let t = staged_ollama("verify");
    let r = root_arg(&t);
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    // The staged root's /proc is the live one, so the real processes are seen.
    symlink("/proc", t.path().join("proc")).unwrap();
    // The process maps the staged shim file; tell verify about it by path.
    let lib = t.path().join("usr/lib64/libvgpu-cuda.so");
    let svc = spawn(Some(&lib));
    wait_for_child(svc.0.id());
    let pid = svc.0.id().to_string();
    let env =
        "PATH=/usr/bin LD_PRELOAD=/usr/lib64/libvgpu-cuda.so LD_LIBRARY_PATH=/var/lib/vgpu/lib";
    let ts = "Sun 2026-11-29 00:00:00 UTC";
    let journal_cmd = format!("journalctl -u ollama.service --since '{ts}' --no-pager -o cat");
    let ok_replies = [
        ("systemctl show -p Environment --value ollama.service", env),
        (
            "systemctl show -p MainPID --value ollama.service",
            pid.as_str(),
        ),
        (
            "systemctl show -p ActiveEnterTimestamp --value ollama.service",
            ts,
        ),
        (
            journal_cmd.as_str(),
            "msg=\"inference compute\" id=GPU-0 library=CUDA compute=9.0\n",
        ),
    ];
    let ran = vgpuctl_with(&["--root", &r, "verify", "--json"], &ok_replies);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let get = |id: &str| {
        checks.iter().find(|c| c["id"] == id).unwrap()["mark"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The drop-in names /usr/lib64/libvgpu-cuda.so; maps match by file name.
    assert_eq!(get("dropin"), "pass");
    assert_eq!(get("environment"), "pass");
    assert_eq!(get("main"), "pass");
    assert_eq!(get("children"), "pass");
    assert_eq!(get("journal"), "pass");
    assert_eq!(get("ld_so_preload"), "pass");
    // Unreadable PID 1 maps (as in some sandboxes) cannot prove absence: that is a ✗ too.
    let pid1_ok = fs::read_to_string("/proc/1/maps").is_ok_and(|m| !m.contains("libvgpu-cuda.so"));
    assert_eq!(get("pid1"), if pid1_ok { "pass" } else { "fail" });
    assert_eq!(ran.code, i32::from(v["ok"] == false));

    // CPU fallback in the journal: a ✗ line and a non-zero exit.
    let mut bad = ok_replies;
    bad[3].1 = "msg=\"inference compute\" library=cpu\n";
    let ran = vgpuctl_with(&["--root", &r, "verify"], &bad);
    assert_eq!(ran.code, 1);
    assert!(ran.stdout.contains("✗ journal since"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("✓ shim mapped in main process"),
        "{}",
        ran.stdout
    );
}
