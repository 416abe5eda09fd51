//! Helpers for the cross-crate tests in `tests/tests/`: building the shim the way users do, reading
//! its ELF metadata, and compiling small C programs.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Builds the shim with the documented command (`scripts/build-shim.sh --debug`) once per test
/// process and returns the absolute path of `libvgpu-cuda.so`; `libcuda.so.1` sits beside it.
///
/// # Panics
/// If the build fails: every test that needs the library should fail loudly then.
pub fn shim_library() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let output = Command::new("bash")
            .arg(workspace_root().join("scripts/build-shim.sh"))
            .arg("--debug")
            .current_dir(workspace_root())
            .output()
            .expect("run scripts/build-shim.sh");
        assert!(
            output.status.success(),
            "scripts/build-shim.sh --debug failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(path.is_file(), "{} missing after the build", path.display());
        let link = path.with_file_name("libcuda.so.1");
        assert_eq!(
            std::fs::read_link(&link).ok(),
            Some(PathBuf::from("libvgpu-cuda.so")),
            "{} should point at libvgpu-cuda.so",
            link.display()
        );
        path
    })
}

/// What the tests read from the library's dynamic section and symbol table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicInfo {
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// Defined, global or weak, default-visibility dynamic symbols, sorted.
    pub exports: Vec<String>,
}

/// Parses an ELF shared object.
///
/// # Panics
/// If the file cannot be read or is not ELF.
pub fn dynamic_info(path: &Path) -> DynamicInfo {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let elf = goblin::elf::Elf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut exports: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| {
            s.st_shndx != goblin::elf::section_header::SHN_UNDEF as usize
                && matches!(
                    s.st_bind(),
                    goblin::elf::sym::STB_GLOBAL | goblin::elf::sym::STB_WEAK
                )
                && s.st_visibility() == goblin::elf::sym::STV_DEFAULT
        })
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name).map(str::to_owned))
        .collect();
    exports.sort();
    exports.dedup();
    DynamicInfo {
        soname: elf.soname.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        exports,
    }
}

/// Compiles a C source from `tests/c/` with `cc` into the test scratch directory. The result is
/// renamed into place, so a running copy is never overwritten (callers compile once per process).
///
/// # Panics
/// If `cc` is missing or the compile fails.
pub fn compile_c(scratch: &Path, source: &str, output: &str, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(scratch).expect("create scratch dir");
    let out = scratch.join(output);
    let staging = scratch.join(format!(".{output}.{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&staging)
        .arg(workspace_root().join("tests/c").join(source))
        .args(extra)
        .status()
        .expect("run cc (a C compiler is needed for the preload tests)");
    assert!(status.success(), "cc failed for {source}");
    std::fs::rename(&staging, &out).expect("move the compiled file into place");
    out
}

/// The captured result of one program run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Its exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

/// Runs `command` with stdin from /dev/null, killing it after `timeout`.
///
/// # Panics
/// If the program cannot start or outlives the timeout.
pub fn run_with_timeout(mut command: Command, timeout: std::time::Duration) -> Outcome {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Outcome {
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        code: status.code(),
    }
}
