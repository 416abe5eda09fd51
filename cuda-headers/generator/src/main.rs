//! `cuda-headers-generate`: regenerates `cuda-headers/src/generated/` (see docs/headers.md).
//!
//! ```text
//! cuda-headers-generate [--cuda-version 13.0 | --cuda-include DIR] [--cache-dir DIR] [--out DIR] [--check]
//! cuda-headers-generate proc-address PROBE.txt [--out FILE] [--check]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use cuda_headers_generator::{generate, proc_address, wheel, GenerateError, HeaderSource};

struct Args {
    source: HeaderSource,
    out: PathBuf,
    check: bool,
}

fn parse_args() -> Result<Args, GenerateError> {
    let mut cuda_version = wheel::DEFAULT_CUDA_VERSION.to_owned();
    let mut include = None;
    let mut cache = wheel::default_cache_dir();
    let mut out = cuda_headers_generator::committed_dir();
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| GenerateError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--cuda-version" => cuda_version = value("--cuda-version")?,
            "--cuda-include" => include = Some(PathBuf::from(value("--cuda-include")?)),
            "--cache-dir" => cache = PathBuf::from(value("--cache-dir")?),
            "--out" => out = PathBuf::from(value("--out")?),
            "--check" => check = true,
            other => {
                return Err(GenerateError::Usage(format!(
                    "unknown argument `{other}`; expected --cuda-version X.Y, --cuda-include DIR, \
                     --cache-dir DIR, --out DIR, --check"
                )))
            }
        }
    }
    let source = match include {
        Some(dir) => HeaderSource::Local(dir),
        None => HeaderSource::Wheel {
            wheel: wheel::pinned(&cuda_version)?,
            cache,
        },
    };
    Ok(Args { source, out, check })
}

/// `proc-address PROBE.txt [--out FILE] [--check]`: regenerates `generated/proc_address.rs`.
fn run_proc_address(mut args: impl Iterator<Item = String>) -> Result<bool, GenerateError> {
    let mut probe = None;
    let mut out = proc_address::committed_file();
    let mut check = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => {
                out = PathBuf::from(
                    args.next()
                        .ok_or_else(|| GenerateError::Usage("--out needs a value".into()))?,
                )
            }
            "--check" => check = true,
            other if probe.is_none() && !other.starts_with("--") => {
                probe = Some(PathBuf::from(other))
            }
            other => {
                return Err(GenerateError::Usage(format!(
                    "unknown argument `{other}`; expected proc-address PROBE.txt [--out FILE] [--check]"
                )))
            }
        }
    }
    let probe = probe
        .ok_or_else(|| GenerateError::Usage("proc-address needs the probe output file".into()))?;
    let contents = proc_address::generate_from(&probe)?;
    let current = std::fs::read_to_string(&out).unwrap_or_default();
    if current == contents {
        return Ok(true);
    }
    if check {
        eprintln!("{} differs from a fresh generation", out.display());
        return Ok(false);
    }
    std::fs::write(&out, contents).map_err(|e| GenerateError::io(&out, e))?;
    eprintln!("wrote {}", out.display());
    Ok(true)
}

fn run() -> Result<bool, GenerateError> {
    let mut raw = std::env::args().skip(1).peekable();
    if raw.peek().map(String::as_str) == Some("proc-address") {
        raw.next();
        return run_proc_address(raw);
    }
    let args = parse_args()?;
    let generated = generate(&args.source)?;
    let mut unchanged = true;
    for (name, contents) in &generated.files {
        let path = args.out.join(name);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == *contents {
            continue;
        }
        unchanged = false;
        if args.check {
            eprintln!("{} differs from a fresh generation", path.display());
        } else {
            std::fs::create_dir_all(&args.out).map_err(|e| GenerateError::io(&args.out, e))?;
            std::fs::write(&path, contents).map_err(|e| GenerateError::io(&path, e))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(unchanged || !args.check)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cuda-headers-generate: {e}");
            ExitCode::FAILURE
        }
    }
}
