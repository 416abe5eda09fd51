//! Preloading the shim into programs that do not use CUDA changes nothing they can observe.
//!
//! Each program runs twice with an observer library preloaded (tests/c/observer.c): once alone,
//! once followed by the shim. Output and exit code must match, and at exit every process of the
//! run must have the same threads and fds and map the same files, apart from the shim itself (its
//! DT_NEEDED, libc and the loader, are in every process already; tests/tests/elf.rs pins that).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use vgpu_tests::{compile_c, run_with_timeout, shim_library, Outcome};

const TIMEOUT: Duration = Duration::from_secs(60);

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preload")
}

fn observer() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        compile_c(
            &scratch(),
            "observer.c",
            "libobserver.so",
            &["-shared", "-fPIC"],
        )
    })
}

fn cuda_probe() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| compile_c(&scratch(), "cuda_probe.c", "cuda_probe", &["-ldl"]))
}

/// One process's state at exit, as the observer saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Report {
    exe: String,
    tasks: usize,
    fds: Vec<String>,
    mapped_files: BTreeSet<String>,
}

fn parse_report(text: &str) -> Report {
    let mut report = Report {
        exe: String::new(),
        tasks: 0,
        fds: Vec::new(),
        mapped_files: BTreeSet::new(),
    };
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "exe" => report.exe = rest.to_owned(),
            "tasks" => report.tasks = rest.parse().expect("task count"),
            "fd" => report.fds.push(normalize_fd(rest)),
            "map" => {
                // address perms offset dev inode [pathname]
                if let Some(path) = rest.splitn(6, ' ').nth(5).map(str::trim) {
                    if !path.is_empty() {
                        report
                            .mapped_files
                            .insert(path.trim_end_matches(" (deleted)").to_owned());
                    }
                }
            }
            other => panic!("unexpected report line kind {other:?}"),
        }
    }
    report.fds.sort();
    report
}

/// `pipe:[12345]` → `pipe`: inode numbers differ between runs.
fn normalize_fd(fd: &str) -> String {
    match fd.find(":[") {
        Some(at) if fd.ends_with(']') => fd[..at].to_owned(),
        _ => fd.to_owned(),
    }
}

struct Run {
    outcome: Outcome,
    reports: Vec<Report>,
}

fn run(case: &Case, preload: &[&Path]) -> Run {
    // The same directory for both runs (they run one after the other), so that the environment,
    // which `env` prints, is identical.
    let dir = scratch().join(format!("reports-{}", case.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("report dir");
    let mut command = Command::new(case.program);
    command.args(case.args).env_clear();
    command.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    command.env("LANG", "C");
    command.env("VGPU_OBSERVE_DIR", &dir);
    if let Some(lib_dir) = &case.library_path {
        command.env("LD_LIBRARY_PATH", lib_dir);
    }
    let preload: Vec<String> = preload.iter().map(|p| p.display().to_string()).collect();
    command.env("LD_PRELOAD", preload.join(" "));
    let outcome = run_with_timeout(command, TIMEOUT);
    let mut reports: Vec<Report> = std::fs::read_dir(&dir)
        .expect("read report dir")
        .map(|e| parse_report(&std::fs::read_to_string(e.expect("entry").path()).expect("report")))
        .collect();
    reports.sort();
    Run { outcome, reports }
}

struct Case {
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    library_path: Option<PathBuf>,
}

fn case(name: &'static str, program: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name,
        program,
        args,
        library_path: None,
    }
}

/// Runs `case` without and with `library` preloaded (after the observer) and says what differs.
fn compare(case: &Case, library: &Path) -> Result<(), String> {
    let observer = observer();
    let without = run(case, &[observer]);
    let with = run(case, &[observer, library]);
    if with.outcome != without.outcome {
        return Err(format!(
            "{}: output or exit code changed:
 without: {:?}
    with: {:?}",
            case.name, without.outcome, with.outcome
        ));
    }
    if without.reports.is_empty() {
        return Err(format!("{}: the observer wrote no report", case.name));
    }
    let library_path = library.display().to_string();
    if let Some(report) = with
        .reports
        .iter()
        .find(|r| !r.mapped_files.contains(&library_path))
    {
        return Err(format!(
            "{}: {library_path} is not mapped in {} (was it preloaded?)",
            case.name, report.exe
        ));
    }
    let strip = |reports: &[Report]| -> Vec<Report> {
        let mut stripped: Vec<Report> = reports
            .iter()
            .cloned()
            .map(|mut r| {
                r.mapped_files.remove(&library_path);
                r
            })
            .collect();
        stripped.sort();
        stripped
    };
    let (with, without) = (strip(&with.reports), strip(&without.reports));
    if with != without {
        return Err(format!(
            "{}: preloading changed threads, fds or mappings:
 without: {without:?}
    with: {with:?}",
            case.name
        ));
    }
    Ok(())
}

fn check(case: &Case) {
    if let Err(difference) = compare(case, shim_library()) {
        panic!("{difference}");
    }
}

/// The comparison is not vacuous: a library that keeps an fd open is caught.
#[test]
fn harness_catches_a_leaked_fd() {
    let leaky = compile_c(&scratch(), "leaky.c", "libleaky.so", &["-shared", "-fPIC"]);
    let difference = compare(&case("leaky_cat", "cat", &["/etc/hostname"]), &leaky)
        .expect_err("an extra fd must be detected");
    assert!(
        difference.contains("threads, fds or mappings"),
        "{difference}"
    );
}

#[test]
fn bash() {
    check(&case(
        "bash",
        "bash",
        &[
            "-c",
            "echo \"bash $((6 * 7))\"; for f in /etc/host*; do echo \"$f\"; done; exit 3",
        ],
    ));
}

#[test]
fn sh() {
    check(&case(
        "sh",
        "sh",
        &["-c", "echo sh; printf '%s\\n' one two >&2"],
    ));
}

#[test]
fn python3() {
    check(&case(
        "python3",
        "/usr/bin/python3",
        &[
            "-c",
            "import os, sys; print(sorted(os.listdir('/etc'))[:5]); print('err', file=sys.stderr)",
        ],
    ));
}

#[test]
fn ls() {
    check(&case("ls", "ls", &["-1", "/"]));
}

#[test]
fn ls_failing() {
    check(&case("ls_failing", "ls", &["/nonexistent-vgpu-path"]));
}

#[test]
fn env() {
    check(&case("env", "env", &["-u", "LD_PRELOAD"]));
}

#[test]
fn cat() {
    check(&case("cat", "cat", &["/etc/passwd"]));
}

#[test]
fn date() {
    check(&case("date", "date", &["-u", "-d", "@0"]));
}

#[test]
fn grep() {
    check(&case("grep", "grep", &["-n", "root", "/etc/passwd"]));
}

#[test]
fn forking_shell() {
    check(&case(
        "forking_shell",
        "sh",
        &[
            "-c",
            "echo parent; (echo subshell); echo piped | cat; sh -c 'echo child'",
        ],
    ));
}

#[test]
fn forking_python() {
    check(&case(
        "forking_python",
        "/usr/bin/python3",
        &[
            "-c",
            "import os, sys\npid = os.fork()\nif pid == 0:\n    print('child')\n    sys.exit(0)\nos.waitpid(pid, 0)\nprint('parent')",
        ],
    ));
}

/// A CUDA client calling only `cuGetErrorString`: it finds `libcuda.so.1` through
/// `LD_LIBRARY_PATH` in both runs, so the shim is mapped in both; preloading must add nothing.
#[test]
fn cuda_client_calling_only_get_error_string() {
    let lib_dir = shim_library().parent().expect("lib dir").to_owned();
    let probe = cuda_probe().display().to_string();
    let case = Case {
        name: "cuda_probe",
        program: Box::leak(probe.into_boxed_str()),
        args: &[],
        library_path: Some(lib_dir),
    };
    check(&case);
}

/// `dlopen("libcuda.so.1")` in a process that preloads the shim returns the shim, with no
/// `LD_LIBRARY_PATH` and no libcuda installed: the loader matches the preloaded soname.
#[test]
fn dlopen_returns_the_preloaded_shim() {
    let shim = shim_library();
    let mut command = Command::new(cuda_probe());
    command
        .arg("where")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", shim);
    let outcome = run_with_timeout(command, TIMEOUT);
    assert_eq!(outcome.code, Some(0), "{outcome:?}");
    assert_eq!(outcome.stderr, "");
    let mut lines = outcome.stdout.lines();
    assert_eq!(lines.next(), Some("rc=0 text=out of memory"));
    let from = lines
        .next()
        .and_then(|l| l.strip_prefix("from="))
        .expect("from= line");
    assert_eq!(
        std::fs::canonicalize(from).expect("canonicalize dli_fname"),
        std::fs::canonicalize(shim).expect("canonicalize shim")
    );
}
