//! Staged-root tests of install, re-install, merge, dry-run, uninstall, recover and refusals.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use vgpuctl::state::{Entry, State};
use vgpuctl::unit_file::{parse_unit, split_words};

const DROPIN: &str = "/etc/systemd/system/ollama.service.d/vgpu.conf";

fn env_words(text: &str) -> Vec<String> {
    parse_unit(text)
        .iter()
        .filter(|e| e.key == "Environment")
        .flat_map(|e| split_words(&e.value))
        .collect()
}

#[test]
fn install_writes_dropin_link_script_and_state_and_reloads() {
    let t = staged_ollama("install");
    let r = root_arg(&t);
    let preload_before = read(t.path(), "/etc/ld.so.preload");
    let ran = vgpuctl(&[
        "--root",
        &r,
        "install",
        "--service",
        "ollama",
        "--region",
        "/dev/shm/vgpu-vm1",
    ]);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.commands,
        vec!["systemctl daemon-reload"],
        "no restart without --restart"
    );
    assert!(
        ran.stdout
            .contains("not run (--root): systemctl daemon-reload"),
        "{}",
        ran.stdout
    );

    let words = env_words(&read(t.path(), DROPIN));
    assert_eq!(
        words,
        vec![
            "LD_PRELOAD=/usr/lib64/libvgpu-cuda.so",
            "LD_LIBRARY_PATH=/var/lib/vgpu/lib",
            "VGPU_REGION=/dev/shm/vgpu-vm1"
        ]
    );
    let link = fs::read_link(t.path().join("var/lib/vgpu/lib/libcuda.so.1")).unwrap();
    assert_eq!(link, std::path::Path::new("/usr/lib64/libvgpu-cuda.so"));
    let script = t.path().join("var/lib/vgpu/emergency-recovery.sh");
    assert_eq!(
        fs::metadata(&script).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let state: State = serde_json::from_str(&read(t.path(), "/var/lib/vgpu/state.json")).unwrap();
    assert_eq!(state.service, "ollama.service");
    assert!(state.files.iter().all(|f| f.prior == Entry::Absent));
    assert!(state
        .created_dirs
        .iter()
        .any(|d| d.ends_with("ollama.service.d")));
    assert_eq!(read(t.path(), "/etc/ld.so.preload"), preload_before);

    // Recovery script recorded before the drop-in in the write order.
    let order: Vec<String> = state
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    let pos = |p: &str| order.iter().position(|o| o == p).unwrap();
    assert!(pos("/var/lib/vgpu/emergency-recovery.sh") < pos(DROPIN));
}

#[test]
fn reinstall_changes_nothing_and_says_so() {
    let t = staged_ollama("reinstall");
    let r = root_arg(&t);
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    let after_first = snapshot(t.path());
    let ran = vgpuctl(&["--root", &r, "install"]);
    assert_eq!(ran.code, 0);
    assert!(
        ran.stdout.contains("already installed; nothing changed"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.commands.is_empty(),
        "no daemon-reload when nothing changed: {:?}",
        ran.commands
    );
    assert_eq!(snapshot(t.path()), after_first);
}

#[test]
fn install_merges_existing_environment_shim_first() {
    let t = staged_ollama("merge-env");
    put(
        t.path(),
        "/etc/systemd/system/ollama.service.d/10-site.conf",
        "[Service]\nEnvironment=\"LD_PRELOAD=/opt/a.so /opt/b.so\" OLLAMA_HOST=0.0.0.0\n\
Environment=LD_LIBRARY_PATH=/opt/lib:/usr/local/lib\n",
    );
    let r = root_arg(&t);
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    let words = env_words(&read(t.path(), DROPIN));
    assert_eq!(
        words[0],
        "LD_PRELOAD=/usr/lib64/libvgpu-cuda.so:/opt/a.so:/opt/b.so"
    );
    assert_eq!(
        words[1],
        "LD_LIBRARY_PATH=/var/lib/vgpu/lib:/opt/lib:/usr/local/lib"
    );
    assert!(!read(t.path(), DROPIN).contains("EnvironmentFile="));

    // Re-install merges with the service's settings, not with its own previous drop-in.
    let ran = vgpuctl(&["--root", &r, "install"]);
    assert!(ran.stdout.contains("nothing changed"), "{}", ran.stdout);
}

#[test]
fn install_merges_environment_file_through_its_own_env_file() {
    let t = staged_ollama("merge-envfile");
    put(
        t.path(),
        "/etc/systemd/system/ollama.service.d/20-envfile.conf",
        "[Service]\nEnvironmentFile=-/etc/default/ollama\n",
    );
    put(
        t.path(),
        "/etc/default/ollama",
        "# ollama\nLD_PRELOAD=\"/opt/c.so\"\nOLLAMA_MODELS=/srv\n",
    );
    let r = root_arg(&t);
    let ran = vgpuctl(&["--root", &r, "install"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let dropin = read(t.path(), DROPIN);
    assert!(
        dropin.contains("EnvironmentFile=/var/lib/vgpu/ollama.env"),
        "{dropin}"
    );
    let env = vgpuctl::unit_file::parse_env_file(&read(t.path(), "/var/lib/vgpu/ollama.env"));
    assert_eq!(
        env[0],
        (
            "LD_PRELOAD".into(),
            "/usr/lib64/libvgpu-cuda.so:/opt/c.so".into()
        )
    );

    // The effective value, EnvironmentFile= overriding Environment= as systemd does, is ours.
    let root = vgpuctl::paths::Root::staged(t.path());
    let cfg = vgpuctl::unit_file::ServiceConfig::load(&root, "ollama");
    let (v, _) = cfg.effective(&root, "LD_PRELOAD").unwrap();
    assert_eq!(v, "/usr/lib64/libvgpu-cuda.so:/opt/c.so");

    // Uninstall puts the tree back, /etc/default/ollama untouched throughout.
    let before = read(t.path(), "/etc/default/ollama");
    assert_eq!(vgpuctl(&["--root", &r, "uninstall"]).code, 0);
    assert_eq!(read(t.path(), "/etc/default/ollama"), before);
    assert!(!exists(t.path(), "/var/lib/vgpu"));
}

#[test]
fn dry_run_prints_plan_and_changes_no_file() {
    let t = staged_ollama("dry");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    let ran = vgpuctl(&["--root", &r, "install", "--dry-run", "--restart"]);
    assert_eq!(ran.code, 0);
    assert!(
        ran.stdout
            .contains("create    /etc/systemd/system/ollama.service.d/vgpu.conf"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("+ Environment=\"LD_PRELOAD=/usr/lib64/libvgpu-cuda.so\""),
        "{}",
        ran.stdout
    );
    assert!(ran
        .stdout
        .contains("would run: systemctl restart ollama.service"));
    assert!(ran.commands.is_empty());
    assert_eq!(snapshot(t.path()), before);

    // Installed, then a changed option: the dry run shows the update and still writes nothing.
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    let installed = snapshot(t.path());
    let ran = vgpuctl(&[
        "--root",
        &r,
        "install",
        "--region",
        "/dev/shm/x",
        "--dry-run",
    ]);
    assert!(
        ran.stdout
            .contains("update    /etc/systemd/system/ollama.service.d/vgpu.conf"),
        "{}",
        ran.stdout
    );
    assert!(ran
        .stdout
        .contains("+ Environment=\"VGPU_REGION=/dev/shm/x\""));
    assert_eq!(snapshot(t.path()), installed);
    for args in [
        &["uninstall", "--dry-run"][..],
        &["recover", "--dry-run"][..],
    ] {
        let mut a = vec!["--root", &r];
        a.extend_from_slice(args);
        assert_eq!(vgpuctl(&a).code, 0);
        assert_eq!(snapshot(t.path()), installed, "{args:?}");
    }
}

#[test]
fn uninstall_restores_exact_prior_state() {
    let t = staged_ollama("uninstall");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    assert_eq!(
        vgpuctl(&["--root", &r, "install", "--region", "/dev/shm/a"]).code,
        0
    );
    assert_ne!(snapshot(t.path()), before);
    // A second install with other options must keep the priors of the first.
    assert_eq!(
        vgpuctl(&["--root", &r, "install", "--region", "/dev/shm/b"]).code,
        0
    );
    let ran = vgpuctl(&["--root", &r, "uninstall"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.commands, vec!["systemctl daemon-reload"]);
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn uninstall_takes_the_installed_service_and_refuses_another() {
    let t = staged_ollama("uninstall-service");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    assert_eq!(
        vgpuctl(&["--root", &r, "install", "--service", "ollama"]).code,
        0
    );
    let installed = snapshot(t.path());
    let other = vgpuctl(&["--root", &r, "uninstall", "--service", "sshd"]);
    assert_eq!(other.code, 1, "{}", other.stderr);
    assert!(
        other.stderr.contains(
            "vgpu is installed into ollama.service, not sshd.service; nothing was changed"
        ),
        "{}",
        other.stderr
    );
    assert!(other.commands.is_empty(), "{:?}", other.commands);
    assert_eq!(snapshot(t.path()), installed);
    for name in ["ollama", "ollama.service"] {
        let dry = vgpuctl(&["--root", &r, "uninstall", "--service", name, "--dry-run"]);
        assert_eq!(dry.code, 0, "{}", dry.stderr);
        assert_eq!(snapshot(t.path()), installed);
    }
    let ran = vgpuctl(&["--root", &r, "uninstall", "--service", "ollama"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn uninstall_restores_a_preexisting_dropin_and_directory() {
    let t = staged_ollama("uninstall-prior");
    put(t.path(), DROPIN, "[Service]\nEnvironment=SOMEONE_ELSES=1\n");
    fs::set_permissions(
        t.path().join(DROPIN.trim_start_matches('/')),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    put(t.path(), "/var/lib/vgpu/notes.txt", "operator notes\n");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    assert!(read(t.path(), DROPIN).contains("LD_PRELOAD"));
    assert_eq!(vgpuctl(&["--root", &r, "uninstall"]).code, 0);
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn recover_removes_vgpu_and_only_the_shims_preload_lines() {
    let t = staged_ollama("recover");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    // Someone followed the old guide as well.
    let foreign = "# site policy\n/usr/lib/libsite-audit.so\n";
    put(
        t.path(),
        "/etc/ld.so.preload",
        &format!("{foreign}/usr/lib64/libvgpu-cuda.so\n"),
    );
    let ran = vgpuctl(&["--root", &r, "recover"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran
        .stdout
        .contains("removed from /etc/ld.so.preload: /usr/lib64/libvgpu-cuda.so"));
    assert_eq!(read(t.path(), "/etc/ld.so.preload"), foreign);
    assert_eq!(snapshot(t.path()), before);
}

#[test]
fn recover_without_state_file_removes_known_paths() {
    let t = staged_ollama("recover-nostate");
    let r = root_arg(&t);
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    fs::write(t.path().join("var/lib/vgpu/state.json"), "{ corrupt").unwrap();
    put(t.path(), "/etc/ld.so.preload", "/usr/lib/libsite-audit.so\n/opt/old/libvgpu-cuda.so /usr/lib/x.so\n# libvgpu-cuda.so note\n");
    let ran = vgpuctl(&["--root", &r, "recover"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("warning: state file"), "{}", ran.stdout);
    assert!(!exists(t.path(), DROPIN));
    assert!(!exists(t.path(), "/var/lib/vgpu/lib"));
    assert!(!exists(t.path(), "/var/lib/vgpu/state.json"));
    assert_eq!(
        read(t.path(), "/etc/ld.so.preload"),
        "/usr/lib/libsite-audit.so\n# libvgpu-cuda.so note\n"
    );
}

#[test]
fn emergency_script_runs_under_plain_sh_and_undoes_everything() {
    let t = staged_ollama("script");
    put(t.path(), DROPIN, "[Service]\nEnvironment=PRIOR=1\n");
    let r = root_arg(&t);
    let before = snapshot(t.path());
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    let foreign = read(t.path(), "/etc/ld.so.preload");
    put(
        t.path(),
        "/etc/ld.so.preload",
        &format!("{foreign}/usr/lib64/libvgpu-cuda.so\n"),
    );
    let out = Command::new("sh")
        .arg(t.path().join("var/lib/vgpu/emergency-recovery.sh"))
        .env("VGPU_ROOT", t.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(t.path()), before);
}

fn assert_refused(tag: &str, make: impl FnOnce(&std::path::Path), reason: &str) {
    let t = staged_ollama(tag);
    make(&t.path().join("opt/shim.so"));
    let before = snapshot(t.path());
    let r = root_arg(&t);
    let ran = vgpuctl(&["--root", &r, "install", "--lib", "/opt/shim.so"]);
    assert_eq!(ran.code, 1, "{tag}: {}", ran.stdout);
    assert!(ran.stderr.contains(reason), "{tag}: {}", ran.stderr);
    assert!(ran.stderr.contains("nothing was changed"));
    assert_eq!(ran.stderr.lines().count(), 1, "one line: {}", ran.stderr);
    assert!(ran.commands.is_empty());
    assert_eq!(snapshot(t.path()), before, "{tag}");
}

fn mkparent(p: &std::path::Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
}

#[test]
fn refuses_bad_libraries_without_changing_anything() {
    assert_refused("missing", |_| {}, "no such file");
    assert_refused(
        "notelf",
        |p| {
            mkparent(p);
            fs::write(p, "#!/bin/sh\n").unwrap()
        },
        "not an ELF file",
    );
    assert_refused(
        "soname",
        |p| {
            mkparent(p);
            build_so(p, Some("libfoo.so.2"))
        },
        "soname is \"libfoo.so.2\"",
    );
    assert_refused(
        "nosoname",
        |p| {
            mkparent(p);
            build_so(p, None)
        },
        "has no DT_SONAME",
    );
    assert_refused(
        "pie",
        |p| {
            mkparent(p);
            build_pie(p)
        },
        "position-independent executable",
    );
    let patched = |offset: usize, bytes: Vec<u8>| {
        move |p: &std::path::Path| {
            mkparent(p);
            build_so(p, Some("libcuda.so.1"));
            let mut b = fs::read(p).unwrap();
            b[offset..offset + bytes.len()].copy_from_slice(&bytes);
            fs::write(p, b).unwrap();
        }
    };
    let other_machine: u16 = if cfg!(target_arch = "x86_64") {
        183
    } else {
        62
    };
    assert_refused(
        "machine",
        patched(18, other_machine.to_le_bytes().to_vec()),
        "ELF machine is",
    );
    assert_refused("class", patched(4, vec![1]), "ELF class is 32-bit");
    assert_refused(
        "etexec",
        patched(16, 2u16.to_le_bytes().to_vec()),
        "not an ELF shared object",
    );
}

#[test]
fn refuses_relative_lib_and_second_service() {
    let t = staged_ollama("relative");
    let r = root_arg(&t);
    let ran = vgpuctl(&["--root", &r, "install", "--lib", "lib.so"]);
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("must be absolute"));
    assert_eq!(vgpuctl(&["--root", &r, "install"]).code, 0);
    let snap = snapshot(t.path());
    let ran = vgpuctl(&["--root", &r, "install", "--service", "other"]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("installed into ollama.service already"),
        "{}",
        ran.stderr
    );
    assert_eq!(snapshot(t.path()), snap);
}

#[test]
fn no_command_writes_ld_so_preload() {
    let t = staged_ollama("preload-untouched");
    // Even a preload file that names the shim is left alone by everything but `recover`.
    let content = "# keep\n/usr/lib/libsite-audit.so\n/usr/lib64/libvgpu-cuda.so\n";
    put(t.path(), "/etc/ld.so.preload", content);
    let r = root_arg(&t);
    for args in [
        &["install"][..],
        &["install"],
        &["status"],
        &["status", "--json"],
        &["doctor"],
        &["verify"],
        &["host", "install", "--bin", "/bin/true"],
        &["uninstall"],
    ] {
        let mut a = vec!["--root", &r];
        a.extend_from_slice(args);
        let ran = vgpuctl(&a);
        if args[0] == "install" {
            assert!(
                ran.stdout.contains("names the shim"),
                "install warns: {}",
                ran.stdout
            );
        }
        assert_eq!(read(t.path(), "/etc/ld.so.preload"), content, "{args:?}");
    }
}

#[test]
fn status_reports_installation() {
    let t = staged_ollama("status");
    let r = root_arg(&t);
    let ran = vgpuctl(&["--root", &r, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["installed"], false);
    vgpuctl(&["--root", &r, "install", "--region", "/dev/shm/r"]);
    let v: serde_json::Value =
        serde_json::from_str(&vgpuctl(&["--root", &r, "status", "--json"]).stdout).unwrap();
    assert_eq!(v["installed"], true);
    assert_eq!(v["service"], "ollama.service");
    assert_eq!(v["lib_ok"], true);
    assert_eq!(v["region"], "/dev/shm/r");
    assert_eq!(v["ld_so_preload_names_shim"], false);
    let text = vgpuctl(&["--root", &r, "status"]).stdout;
    assert!(
        text.contains("present  /etc/systemd/system/ollama.service.d/vgpu.conf"),
        "{text}"
    );
}

#[test]
fn host_install_writes_template_idempotently() {
    let t = TempDir::new("host");
    let r = root_arg(&t);
    let ran = vgpuctl(&["--root", &r, "host", "install", "--dry-run"]);
    assert_eq!(ran.code, 0);
    assert!(snapshot(t.path()).is_empty());
    let ran = vgpuctl(&["--root", &r, "host", "install"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.commands, vec!["systemctl daemon-reload"]);
    let unit = read(t.path(), "/etc/systemd/system/vgpu-host@.service");
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/vgpu-host --region /dev/shm/vgpu-%i --region-size ${REGION_SIZE} \
             --doorbell poll --keep-region --peer-timeout-ms ${PEER_TIMEOUT_MS} \
             --control /run/vgpu-host/%i/control.sock\n"
        ),
        "{unit}"
    );
    assert!(unit.contains("RuntimeDirectory=vgpu-host/%i\n"), "{unit}");
    let snap = snapshot(t.path());
    let ran = vgpuctl(&["--root", &r, "host", "install"]);
    assert!(ran.stdout.contains("nothing changed"));
    assert!(ran.commands.is_empty());
    assert_eq!(snapshot(t.path()), snap);
    let ran = vgpuctl(&[
        "--root",
        &r,
        "host",
        "install",
        "--region-template",
        "/dev/shm/one",
    ]);
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("has no %i"));
    // Metrics are wired in only when asked for.
    let ran = vgpuctl(&[
        "--root",
        &r,
        "host",
        "install",
        "--metrics",
        "127.0.0.1:9464",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let unit = read(t.path(), "/etc/systemd/system/vgpu-host@.service");
    assert!(
        unit.contains("--control /run/vgpu-host/%i/control.sock --metrics 127.0.0.1:9464\n"),
        "{unit}"
    );
}

#[test]
fn the_binary_runs_a_staged_install() {
    let t = staged_ollama("binary");
    let out = Command::new(env!("CARGO_BIN_EXE_vgpuctl"))
        .args(["--root", &root_arg(&t), "install", "--service", "ollama"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not run (--root): systemctl daemon-reload")
    );
    assert!(exists(t.path(), DROPIN));
}
