//! `scripts/install-test-deps.sh` against fake roots (`--root DIR --dry-run`): each dependency is
//! judged by the file the tests really load, so a machine with only `libclang-cpp.so.14` (which
//! Debian ships without libclang) must install libclang-dev.

use std::fs;
use std::path::Path;
use std::process::Command;

use vgpu_tests::workspace_root;

/// Runs the script in dry-run mode against `root`; returns its stdout (it must exit 0).
fn dry_run(root: &Path) -> String {
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts/install-test-deps.sh"))
        .args(["--root".as_ref(), root.as_os_str(), "--dry-run".as_ref()])
        .env_remove("LIBCLANG_PATH")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The line the script printed for one dependency.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("install-test-deps: {what} ")))
        .unwrap_or_else(|| panic!("no line for {what} in:\n{stdout}"))
}

/// The packages of the dry run's last line.
fn would_install(stdout: &str) -> Vec<String> {
    let last = stdout.lines().last().unwrap_or_default();
    let list = last
        .strip_prefix("install-test-deps: would install ")
        .and_then(|l| l.strip_suffix(" (dry run)"))
        .unwrap_or_else(|| panic!("last line is not a dry-run plan: {last}"));
    list.split(' ').map(str::to_owned).collect()
}

fn touch(root: &Path, path: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
    fs::write(p, b"").expect("write");
}

fn fake_root(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vgpu-deps-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let root = fake_root("cpp-only");
    touch(&root, "/usr/lib/llvm-14/lib/libclang-cpp.so.14");
    touch(&root, "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14");
    let out = dry_run(&root);
    assert!(
        line(&out, "libclang (bindgen)").ends_with("missing  -> libclang-dev"),
        "{out}"
    );
    assert!(
        would_install(&out).contains(&"libclang-dev".to_owned()),
        "{out}"
    );
    fs::remove_dir_all(&root).ok();
}

#[test]
fn every_dependency_is_printed_with_the_file_that_satisfied_it() {
    let root = fake_root("complete");
    for f in [
        "/usr/bin/cc",
        "/usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "/usr/lib/llvm-14/lib/libclang.so.1",
        "/usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h",
        "/usr/bin/systemd-analyze",
        "/usr/bin/qemu-system-x86_64",
        "/usr/bin/file",
        "/usr/bin/cpio",
        "/usr/sbin/depmod",
        "/usr/bin/unzip",
        "/usr/sbin/debootstrap",
        "/sbin/mkfs.ext4",
        "/usr/bin/tmux",
    ] {
        touch(&root, f);
    }
    let out = dry_run(&root);
    assert!(
        line(&out, "libclang (bindgen)").ends_with("ok       /usr/lib/llvm-14/lib/libclang.so.1"),
        "{out}"
    );
    assert!(
        line(&out, "clang resource headers (bindgen)")
            .ends_with("ok       /usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h"),
        "{out}"
    );
    assert!(
        line(&out, "depmod").ends_with("ok       /usr/sbin/depmod"),
        "{out}"
    );
    assert!(
        line(&out, "mkfs.ext4").ends_with("ok       /sbin/mkfs.ext4"),
        "{out}"
    );
    // An empty file is no static busybox: only that is left to install.
    assert_eq!(would_install(&out), ["busybox-static"], "{out}");
    fs::remove_dir_all(&root).ok();
}

#[test]
fn an_empty_root_needs_everything() {
    let root = fake_root("empty");
    let out = dry_run(&root);
    let plan = would_install(&out);
    for p in [
        "gcc",
        "libc6-dev",
        "libclang-dev",
        "systemd",
        "qemu-system-x86",
        "busybox-static",
        "cpio",
        "kmod",
        "unzip",
        "file",
        "debootstrap",
        "e2fsprogs",
        "tmux",
    ] {
        assert!(plan.contains(&p.to_owned()), "{p} missing from {plan:?}");
    }
    assert_eq!(
        plan.iter().filter(|p| *p == "libclang-dev").count(),
        1,
        "listed once"
    );
    fs::remove_dir_all(&root).ok();
}
