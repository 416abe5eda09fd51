//! Shared helpers: staged roots, tree snapshots, fake shims built with `cc`, running the CLI.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use clap::Parser;
use vgpuctl::cli::{run, Cli};
use vgpuctl::systemctl::RecordingRunner;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vgpuctl-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What a path in a tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>, u32),
    Link(PathBuf),
    Dir(u32),
}

/// Every path under `dir` with contents, link target or mode: two equal snapshots mean equal trees.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap().to_path_buf();
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if m.file_type().is_symlink() {
            out.insert(rel, Node::Link(fs::read_link(&p).unwrap()));
        } else if m.is_dir() {
            out.insert(rel, Node::Dir(mode));
            walk(base, &p, out);
        } else {
            out.insert(rel, Node::File(fs::read(&p).unwrap(), mode));
        }
    }
}

/// Writes `contents` at target path `path` under `root`, creating parents.
pub fn put(root: &Path, path: &str, contents: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, contents).unwrap();
}

pub fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap()
}

pub fn exists(root: &Path, path: &str) -> bool {
    fs::symlink_metadata(root.join(path.trim_start_matches('/'))).is_ok()
}

/// Compiles a shared object with `cc` into `out`; `soname` None builds one without a soname.
pub fn build_so(out: &Path, soname: Option<&str>) {
    let src = out.with_extension("c");
    fs::write(&src, "int vgpu_fake_shim_marker(void) { return 42; }\n").unwrap();
    let mut cmd = Command::new("cc");
    cmd.args(["-shared", "-fPIC", "-o"]).arg(out).arg(&src);
    if let Some(s) = soname {
        cmd.arg(format!("-Wl,-soname,{s}"));
    }
    let st = cmd.status().expect("cc must be installed for these tests");
    assert!(st.success(), "cc failed");
}

/// Compiles a position-independent executable.
pub fn build_pie(out: &Path) {
    let src = out.with_extension("c");
    fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let st = Command::new("cc")
        .args(["-fPIE", "-pie", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A staged root with an `ollama.service` unit and the fake shim at /usr/lib64/libvgpu-cuda.so.
pub fn staged_ollama(tag: &str) -> TempDir {
    let t = TempDir::new(tag);
    put(
        t.path(),
        "/etc/systemd/system/ollama.service",
        "[Unit]\nDescription=Ollama Service\nAfter=network-online.target\n\n[Service]\n\
ExecStart=/bin/true serve\nUser=ollama\nGroup=ollama\nRestart=always\n\
Environment=\"PATH=/usr/local/bin:/usr/bin:/bin\"\n\n[Install]\nWantedBy=default.target\n",
    );
    put(
        t.path(),
        "/etc/ld.so.preload",
        "# site policy\n/usr/lib/libsite-audit.so\n",
    );
    let lib = t.path().join("usr/lib64/libvgpu-cuda.so");
    fs::create_dir_all(lib.parent().unwrap()).unwrap();
    build_so(&lib, Some("libcuda.so.1"));
    fs::remove_file(lib.with_extension("c")).unwrap();
    t
}

/// Output of one CLI run.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub commands: Vec<String>,
}

/// Runs the CLI in-process with a recording runner (canned replies from `replies`).
pub fn vgpuctl_with(args: &[&str], replies: &[(&str, &str)]) -> Ran {
    let cli = Cli::try_parse_from(std::iter::once("vgpuctl").chain(args.iter().copied())).unwrap();
    let mut runner = RecordingRunner::new();
    for (k, v) in replies {
        runner.reply(k, v);
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run(cli, &mut runner, &mut out, &mut err);
    Ran {
        code,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
        commands: runner.log,
    }
}

pub fn vgpuctl(args: &[&str]) -> Ran {
    vgpuctl_with(args, &[])
}

pub fn root_arg(t: &TempDir) -> String {
    t.path().display().to_string()
}
