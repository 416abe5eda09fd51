//! `vgpuctl doctor` on staged roots.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

fn checks(ran: &Ran) -> serde_json::Value {
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.stdout))
}

fn mark(v: &serde_json::Value, id: &str) -> String {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {v}"))["mark"]
        .as_str()
        .unwrap()
        .to_string()
}

fn region_header(ready: bool) -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[..8].copy_from_slice(b"VGPUSHM1");
    h[8..12].copy_from_slice(&transport::LAYOUT_VERSION.to_le_bytes());
    h[24..28].copy_from_slice(&(if ready { 2u32 } else { 0 }).to_le_bytes());
    h
}

#[test]
fn healthy_install_passes_and_region_header_is_checked() {
    let t = staged_ollama("doctor-ok");
    put(
        t.path(),
        "/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n",
    );
    put(
        t.path(),
        "/etc/group",
        "root:x:0:\nollama:x:998:\nkvm:x:104:ollama\n",
    );
    let region = t.path().join("dev/shm/vgpu-vm1");
    fs::create_dir_all(region.parent().unwrap()).unwrap();
    fs::write(&region, region_header(true)).unwrap();
    fs::set_permissions(&region, fs::Permissions::from_mode(0o666)).unwrap();
    let r = root_arg(&t);
    assert_eq!(
        vgpuctl(&["--root", &r, "install", "--region", "/dev/shm/vgpu-vm1"]).code,
        0
    );

    let ran = vgpuctl(&["--root", &r, "doctor", "--json"]);
    let v = checks(&ran);
    assert_eq!(
        mark(&v, "ld_so_preload"),
        "info",
        "foreign entry reported, not failed"
    );
    assert_eq!(mark(&v, "stray_libcuda"), "pass");
    assert_eq!(mark(&v, "override_LD_PRELOAD"), "pass");
    assert_eq!(mark(&v, "override_LD_LIBRARY_PATH"), "pass");
    assert_eq!(mark(&v, "region_access"), "pass");
    assert_eq!(mark(&v, "host"), "pass");
    assert_eq!(ran.code, 0, "{}", ran.stdout);
    let text = vgpuctl(&["--root", &r, "doctor"]).stdout;
    assert!(
        text.contains("checked the region header only"),
        "honest about the handshake: {text}"
    );

    // Not initialised: the host check fails.
    fs::write(&region, region_header(false)).unwrap();
    let v = checks(&vgpuctl(&["--root", &r, "doctor", "--json"]));
    assert_eq!(mark(&v, "host"), "fail");
}

#[test]
fn finds_strays_overrides_root_only_region_and_preloaded_shim() {
    let t = staged_ollama("doctor-bad");
    put(
        t.path(),
        "/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n",
    );
    put(t.path(), "/etc/group", "ollama:x:998:\n");
    let region = t.path().join("sys/bus/pci/devices/0000:00:05.0/resource2");
    fs::create_dir_all(region.parent().unwrap()).unwrap();
    fs::write(&region, b"not a region").unwrap();
    fs::set_permissions(&region, fs::Permissions::from_mode(0o600)).unwrap();
    let r = root_arg(&t);
    let reg = "/sys/bus/pci/devices/0000:00:05.0/resource2";
    assert_eq!(vgpuctl(&["--root", &r, "install", "--region", reg]).code, 0);
    put(
        t.path(),
        "/usr/lib/x86_64-linux-gnu/libcuda.so.535.1",
        "stray",
    );
    put(t.path(), "/usr/local/cuda-12.4/lib64/libcuda.so", "stray");
    put(
        t.path(),
        "/etc/systemd/system/ollama.service.d/zz-late.conf",
        "[Service]\nEnvironment=LD_PRELOAD=/opt/other.so\n",
    );
    put(
        t.path(),
        "/etc/ld.so.preload",
        "/usr/lib64/libvgpu-cuda.so\n",
    );

    let ran = vgpuctl(&["--root", &r, "doctor", "--json"]);
    assert_eq!(ran.code, 1);
    let v = checks(&ran);
    assert_eq!(mark(&v, "ld_so_preload"), "fail");
    assert_eq!(mark(&v, "stray_libcuda"), "warn");
    let stray = v.to_string();
    assert!(
        stray.contains("/usr/lib/x86_64-linux-gnu/libcuda.so.535.1"),
        "{stray}"
    );
    assert!(
        stray.contains("/usr/local/cuda-12.4/lib64/libcuda.so"),
        "{stray}"
    );
    assert!(
        !stray.contains("/var/lib/vgpu/lib/libcuda.so.1\""),
        "own link is not a stray"
    );
    assert_eq!(mark(&v, "override_LD_PRELOAD"), "fail");
    assert!(
        stray.contains("zz-late.conf"),
        "names the overriding drop-in: {stray}"
    );
    assert_eq!(mark(&v, "region_access"), "fail");
    assert!(
        stray.contains(&format!("ExecStartPre=+/bin/chown ollama {reg}")),
        "{stray}"
    );
    assert_eq!(mark(&v, "host"), "fail");

    let text = vgpuctl(&["--root", &r, "doctor"]).stdout;
    assert!(
        text.contains("✗ /etc/ld.so.preload names the shim"),
        "{text}"
    );
    assert!(text.contains("    fix: vgpuctl recover"), "{text}");
}

#[test]
fn glob_expansion_matches_components() {
    let t = TempDir::new("glob");
    put(t.path(), "/usr/local/cuda-12/lib64/libcuda.so.1", "");
    put(t.path(), "/usr/local/cuda/lib/libcuda.so", "");
    put(t.path(), "/usr/local/cuda/lib/libcudart.so", "");
    put(t.path(), "/usr/local/other/lib/libcuda.so", "");
    let root = vgpuctl::paths::Root::staged(t.path());
    let got = vgpuctl::doctor::expand_glob(&root, "/usr/local/cuda*/lib*/libcuda.so*");
    let got: Vec<String> = got.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        got,
        vec![
            "/usr/local/cuda/lib/libcuda.so",
            "/usr/local/cuda-12/lib64/libcuda.so.1"
        ]
    );
}
