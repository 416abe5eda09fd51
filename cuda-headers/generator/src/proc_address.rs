//! `proc-address`: turns the real driver's `cuGetProcAddress_v2` probe output
//! (`cuda-headers/probe/proc-address-<driver>.txt`, made by `scripts/probe-proc-address.sh` on the
//! GPU machine) into `cuda-headers/src/generated/proc_address.rs`.
//!
//! Probe format: `driver <version>`, then per pass (`pass before-init`, `pass after-init`, the
//! second preceded by a `cuInit <result>` line) one line per breakpoint:
//! `<name> <flag> <from_version> <symbol>` or `<name> <flag> <from_version> -<status>/<CUresult>`
//! when the driver returned NULL. Both passes must agree; the first is used.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::GenerateError;
use crate::render;

/// The command that regenerates the committed file from the committed probe output.
pub const REGENERATE_COMMAND: &str =
    "cargo run -p cuda-headers-generator -- proc-address cuda-headers/probe/proc-address-580.159.04.txt";

/// What the driver answered from one breakpoint on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbedAnswer {
    /// A pointer: the exported symbol it belongs to.
    Symbol(String),
    /// NULL, with `CUdriverProcAddressQueryResult` `status` and the call's `CUresult`.
    Null {
        /// 1 = SYMBOL_NOT_FOUND, 2 = VERSION_NOT_SUFFICIENT.
        status: u32,
        /// The `CUresult` the call returned.
        result: u32,
    },
}

/// One breakpoint: from `from_version` on (until the next breakpoint), `answer`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Breakpoint {
    /// The base name asked for.
    pub name: String,
    /// 0 default, 1 legacy stream, 2 per-thread default stream.
    pub flag: u64,
    /// The first probed version with this answer.
    pub from_version: i32,
    /// The answer.
    pub answer: ProbedAnswer,
}

/// A parsed probe file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `cuDriverGetVersion` of the probed driver.
    pub driver_version: i32,
    /// The breakpoints of the first pass, sorted by (name, flag, from_version).
    pub breakpoints: Vec<Breakpoint>,
}

fn bad(line_no: usize, line: &str, why: &str) -> GenerateError {
    GenerateError::Output(format!("probe line {line_no} `{line}`: {why}"))
}

fn parse_answer(line_no: usize, line: &str, text: &str) -> Result<ProbedAnswer, GenerateError> {
    if let Some(null) = text.strip_prefix('-') {
        let (status, result) = null
            .split_once('/')
            .ok_or_else(|| bad(line_no, line, "expected -<status>/<CUresult>"))?;
        let status: u32 = status
            .parse()
            .map_err(|_| bad(line_no, line, "status is not a number"))?;
        let result: u32 = result
            .parse()
            .map_err(|_| bad(line_no, line, "CUresult is not a number"))?;
        if !(1..=2).contains(&status) {
            return Err(bad(line_no, line, "status is neither 1 nor 2"));
        }
        return Ok(ProbedAnswer::Null { status, result });
    }
    if text == "?" {
        return Err(bad(
            line_no,
            line,
            "the driver returned a pointer that no export matches",
        ));
    }
    if !text.starts_with("cu") || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad(line_no, line, "not a driver symbol name"));
    }
    Ok(ProbedAnswer::Symbol(text.to_owned()))
}

/// Parses probe output.
///
/// # Errors
/// [`GenerateError::Output`] naming the first malformed line, a missing `driver` line, passes
/// that disagree, or breakpoints out of order.
pub fn parse(text: &str) -> Result<Probe, GenerateError> {
    let mut driver_version = None;
    let mut passes: Vec<(String, Vec<Breakpoint>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["driver", v] => {
                driver_version = Some(
                    v.parse()
                        .map_err(|_| bad(line_no, line, "driver version is not a number"))?,
                )
            }
            ["pass", name] => passes.push(((*name).to_owned(), Vec::new())),
            ["cuInit", result] if result.parse::<i64>().is_ok() => {}
            [name, flag, from, answer] => {
                let (_, current) = passes
                    .last_mut()
                    .ok_or_else(|| bad(line_no, line, "breakpoint before any `pass` line"))?;
                let flag: u64 = flag
                    .parse()
                    .map_err(|_| bad(line_no, line, "flag is not a number"))?;
                if flag > 2 {
                    return Err(bad(line_no, line, "flag is not 0, 1 or 2"));
                }
                let from_version: i32 = from
                    .parse()
                    .map_err(|_| bad(line_no, line, "version is not a number"))?;
                let answer = parse_answer(line_no, line, answer)?;
                if let Some(prev) = current.last() {
                    if prev.name == *name && prev.flag == flag && prev.from_version >= from_version
                    {
                        return Err(bad(line_no, line, "breakpoints of a name are out of order"));
                    }
                }
                current.push(Breakpoint {
                    name: (*name).to_owned(),
                    flag,
                    from_version,
                    answer,
                });
            }
            _ => return Err(bad(line_no, line, "unrecognised line")),
        }
    }
    let driver_version =
        driver_version.ok_or_else(|| GenerateError::Output("probe has no `driver` line".into()))?;
    let mut passes = passes.into_iter();
    let (first_name, mut breakpoints) = passes
        .next()
        .ok_or_else(|| GenerateError::Output("probe has no `pass` section".into()))?;
    for (name, other) in passes {
        if other != breakpoints {
            return Err(GenerateError::Output(format!(
                "pass `{name}` differs from pass `{first_name}`: the table would depend on cuInit"
            )));
        }
    }
    if breakpoints.is_empty() {
        return Err(GenerateError::Output("probe has no breakpoints".into()));
    }
    breakpoints.sort();
    let unique: BTreeMap<(&str, u64, i32), ()> = breakpoints
        .iter()
        .map(|b| ((b.name.as_str(), b.flag, b.from_version), ()))
        .collect();
    if unique.len() != breakpoints.len() {
        return Err(GenerateError::Output(
            "a (name, flag, version) appears twice".into(),
        ));
    }
    Ok(Probe {
        driver_version,
        breakpoints,
    })
}

/// The `CUresult` that every NULL answer of the probe with `status` carried: the driver's answer
/// for a version below a symbol's first breakpoint (status 2, VERSION_NOT_SUFFICIENT) and for a
/// name its lookup does not know (status 1, SYMBOL_NOT_FOUND).
fn null_result(probe: &Probe, status: u32, what: &str) -> Result<u32, GenerateError> {
    let mut seen = probe.breakpoints.iter().filter_map(|b| match b.answer {
        ProbedAnswer::Null { status: s, result } if s == status => Some(result),
        _ => None,
    });
    let first = seen
        .next()
        .ok_or_else(|| GenerateError::Output(format!("no {what} answer in the probe")))?;
    if seen.any(|r| r != first) {
        return Err(GenerateError::Output(format!(
            "{what} answers carry different CUresults"
        )));
    }
    Ok(first)
}

/// The fixed part of the generated module: types and the lookup.
const TEMPLATE: &str = r#"
/// What the driver hands out from one breakpoint on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A pointer to the exported function of this name.
    Symbol(&'static str),
    /// NULL with `CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND`; `result` is the `CUresult` returned.
    NotFound {
        /// The `CUresult` the driver returned with it.
        result: u32,
    },
    /// NULL with `CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT`; `result` is the `CUresult` returned.
    VersionNotSufficient {
        /// The `CUresult` the driver returned with it.
        result: u32,
    },
}

/// One breakpoint of the probed driver's `cuGetProcAddress_v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakpoint {
    /// The base name asked for.
    pub name: &'static str,
    /// 0 default, 1 legacy stream, 2 per-thread default stream.
    pub flag: u64,
    /// From this requested version on (up to the next breakpoint), `answer` holds.
    pub from_version: i32,
    /// The answer.
    pub answer: Answer,
}

/// What the probed driver answered for the names its lookup did not know (exported names such as
/// `cuEGLApiInit`): NULL, SYMBOL_NOT_FOUND and [`SYMBOL_NOT_FOUND_RESULT`]. The answer for any
/// name the probe never saw.
pub const UNKNOWN_NAME: Answer = Answer::NotFound {
    result: SYMBOL_NOT_FOUND_RESULT,
};

/// The answer for `name` asked with `version` and `flags`; `None` when the probe never saw the
/// name (see [`UNKNOWN_NAME`]) or `flags` is not 0, 1 or 2. The last breakpoint with
/// `from_version <= version` holds; a version below the first breakpoint gets that breakpoint's
/// NULL answer if it has one, and otherwise VERSION_NOT_SUFFICIENT.
pub fn resolve(name: &str, version: i32, flags: u64) -> Option<Answer> {
    let start = BREAKPOINTS.partition_point(|b| (b.name, b.flag) < (name, flags));
    let end = BREAKPOINTS.partition_point(|b| (b.name, b.flag) <= (name, flags));
    let rows = &BREAKPOINTS[start..end];
    let first = rows.first()?;
    let below = rows.partition_point(|b| b.from_version <= version);
    Some(match below {
        0 => match first.answer {
            Answer::Symbol(_) => Answer::VersionNotSufficient {
                result: VERSION_NOT_SUFFICIENT_RESULT,
            },
            null => null,
        },
        n => rows[n - 1].answer,
    })
}
"#;

fn render_answer(answer: &ProbedAnswer) -> String {
    match answer {
        ProbedAnswer::Symbol(s) => format!("Answer::Symbol({s:?})"),
        ProbedAnswer::Null { status: 1, result } => {
            format!("Answer::NotFound {{ result: {result} }}")
        }
        ProbedAnswer::Null { result, .. } => {
            format!("Answer::VersionNotSufficient {{ result: {result} }}")
        }
    }
}

/// Renders the generated module for `probe`, read from `source` (a path shown in the header).
///
/// # Errors
/// [`GenerateError::Output`] for inconsistent data, [`GenerateError::Rustfmt`].
pub fn render(probe: &Probe, source: &str) -> Result<String, GenerateError> {
    let vns = null_result(probe, 2, "VERSION_NOT_SUFFICIENT")?;
    let snf = null_result(probe, 1, "SYMBOL_NOT_FOUND")?;
    let mut body = String::new();
    let _ = writeln!(
        body,
        "/// `cuDriverGetVersion` of the probed driver.\npub const PROBED_DRIVER_VERSION: i32 = {};",
        probe.driver_version
    );
    let _ = writeln!(
        body,
        "/// The `CUresult` the probed driver returns with VERSION_NOT_SUFFICIENT.\n\
         pub const VERSION_NOT_SUFFICIENT_RESULT: u32 = {vns};"
    );
    let _ = writeln!(
        body,
        "/// The `CUresult` the probed driver returns with SYMBOL_NOT_FOUND.\n\
         pub const SYMBOL_NOT_FOUND_RESULT: u32 = {snf};"
    );
    body.push_str(TEMPLATE);
    body.push_str(
        "\n/// Every breakpoint, sorted by (name, flag, from_version).\npub static BREAKPOINTS: &[Breakpoint] = &[\n",
    );
    for b in &probe.breakpoints {
        let _ = writeln!(
            body,
            "Breakpoint {{ name: {:?}, flag: {}, from_version: {}, answer: {} }},",
            b.name,
            b.flag,
            b.from_version,
            render_answer(&b.answer)
        );
    }
    body.push_str("];\n");
    let header = format!(
        "// Generated by cuda-headers-generate proc-address from {source} (driver {}) — DO NOT EDIT.\n\
         // Regenerate with `{REGENERATE_COMMAND}` (docs/runtime-api.md).\n\n\
         //! The probed driver's `cuGetProcAddress_v2` answers by name, flag and version.\n\n",
        probe.driver_version
    );
    Ok(header + &render::rustfmt(&body)?)
}

/// The committed output file, `cuda-headers/src/generated/proc_address.rs`.
pub fn committed_file() -> PathBuf {
    crate::committed_dir().join("proc_address.rs")
}

/// Reads the probe at `path` and renders the module. The header names the file relative to the
/// workspace when it lies inside it, so regeneration from any directory gives the same bytes.
///
/// # Errors
/// I/O errors and everything [`parse`] and [`render`] refuse.
pub fn generate_from(path: &Path) -> Result<String, GenerateError> {
    let text = std::fs::read_to_string(path).map_err(|e| GenerateError::io(path, e))?;
    let probe = parse(&text)?;
    let shown = path
        .file_name()
        .map(|f| format!("cuda-headers/probe/{}", f.to_string_lossy()))
        .unwrap_or_else(|| path.display().to_string());
    render(&probe, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "driver 13000\npass before-init\n\
        cuB 0 2000 -2/0\ncuB 0 11020 cuB\ncuA 0 2000 cuA\ncuA 0 3020 cuA_v2\ncuC 0 2000 -1/0\n\
        cuInit 0\npass after-init\n\
        cuB 0 2000 -2/0\ncuB 0 11020 cuB\ncuA 0 2000 cuA\ncuA 0 3020 cuA_v2\ncuC 0 2000 -1/0\n";

    #[test]
    fn parses_and_sorts_breakpoints() {
        let probe = parse(SAMPLE).expect("valid");
        assert_eq!(probe.driver_version, 13000);
        let names: Vec<_> = probe
            .breakpoints
            .iter()
            .map(|b| (b.name.as_str(), b.from_version))
            .collect();
        assert_eq!(
            names,
            [
                ("cuA", 2000),
                ("cuA", 3020),
                ("cuB", 2000),
                ("cuB", 11020),
                ("cuC", 2000)
            ]
        );
        assert_eq!(
            probe.breakpoints[2].answer,
            ProbedAnswer::Null {
                status: 2,
                result: 0
            }
        );
    }

    #[test]
    fn refuses_passes_that_differ_and_bad_lines() {
        let differing = SAMPLE.replacen("cuA_v2", "cuA_v3", 1);
        assert!(parse(&differing)
            .unwrap_err()
            .to_string()
            .contains("differs"));
        let bad_status = SAMPLE.replace("-2/0", "-7/0");
        assert!(parse(&bad_status).is_err());
        let unmatched = SAMPLE.replace("cuA_v2", "?");
        assert!(parse(&unmatched)
            .unwrap_err()
            .to_string()
            .contains("no export matches"));
        assert!(parse("pass x\ncuA 0 2000 cuA\n").is_err(), "no driver line");
        assert!(
            parse("driver 1\npass x\ncuA 3 2000 cuA\n").is_err(),
            "flag 3"
        );
    }

    #[test]
    fn regeneration_reproduces_the_committed_file() {
        let probe =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe/proc-address-580.159.04.txt");
        let fresh = generate_from(&probe).expect("the committed probe generates (rustfmt needed)");
        let committed = std::fs::read_to_string(committed_file()).expect("committed file");
        assert!(fresh.len() > 10_000);
        assert!(
            fresh == committed,
            "{} differs from a fresh generation; run `{REGENERATE_COMMAND}`",
            committed_file().display()
        );
    }

    #[test]
    fn renders_a_sorted_table() {
        let out = render(&parse(SAMPLE).expect("valid"), "sample.txt").expect("renders");
        assert!(out.starts_with("// Generated by cuda-headers-generate proc-address"));
        assert!(out.contains("DO NOT EDIT"));
        let a = out.find("name: \"cuA\"").expect("cuA row");
        let b = out.find("name: \"cuB\"").expect("cuB row");
        assert!(a < b);
        assert!(out.contains("Answer::VersionNotSufficient { result: 0 }"));
        assert!(out.contains("pub const PROBED_DRIVER_VERSION: i32 = 13000;"));
        assert!(out.contains("pub const SYMBOL_NOT_FOUND_RESULT: u32 = 0;"));
        let without_not_found = SAMPLE.replace("cuC 0 2000 -1/0\n", "");
        let refused = render(&parse(&without_not_found).expect("valid"), "sample.txt");
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("no SYMBOL_NOT_FOUND answer"));
    }
}
