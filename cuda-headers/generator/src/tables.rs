//! Data tables derived from the headers: symbol versions (from `*Typedefs.h`) and `CUresult` texts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use syn::{Expr, ImplItem, Item, Lit};

use crate::error::GenerateError;

/// The typedef headers that carry `PFN_cu…_vNNNNN` names. `cudaProfilerTypedefs.h` is included:
/// only its text is scanned, so its missing `cudaProfiler.h` does not matter here.
pub const TYPEDEF_HEADERS: &[&str] = &[
    "cudaTypedefs.h",
    "cudaGLTypedefs.h",
    "cudaEGLTypedefs.h",
    "cudaVDPAUTypedefs.h",
    "cudaProfilerTypedefs.h",
];

/// One `PFN_<name>_v<version>[_ptds|_ptsz]` typedef.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcVersion {
    /// The API name as `cuGetProcAddress` is asked for it (`cuMemcpyHtoD`).
    pub name: String,
    /// The CUDA version (`1000 * major + 10 * minor`) in which this variant appeared.
    pub version: u32,
    /// `""`, `"_ptds"` or `"_ptsz"`.
    pub stream_suffix: &'static str,
}

/// Scans the typedef headers for `(CUDAAPI *PFN_…)` declarations.
///
/// # Errors
/// A missing header, or one without any `PFN_` typedef.
pub fn proc_versions(include: &Path) -> Result<Vec<ProcVersion>, GenerateError> {
    let mut all = BTreeSet::new();
    for header in TYPEDEF_HEADERS {
        let path = include.join(header);
        if !path.is_file() {
            return Err(GenerateError::MissingHeader(path));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| GenerateError::io(&path, e))?;
        let before = all.len();
        for (at, _) in text.match_indices("*PFN_cu") {
            let rest = &text[at + "*PFN_".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if !rest[end..].trim_start().starts_with(')') {
                continue;
            }
            if let Some(entry) = parse_pfn(&rest[..end]) {
                all.insert(entry);
            }
        }
        if all.len() == before {
            return Err(GenerateError::Output(format!(
                "{header}: no PFN_ typedefs found"
            )));
        }
    }
    Ok(all.into_iter().collect())
}

/// Splits `cuMemcpyHtoD_v7000_ptds` into name, version and stream suffix.
fn parse_pfn(symbol: &str) -> Option<ProcVersion> {
    let (base, stream_suffix) = if let Some(b) = symbol.strip_suffix("_ptds") {
        (b, "_ptds")
    } else if let Some(b) = symbol.strip_suffix("_ptsz") {
        (b, "_ptsz")
    } else {
        (symbol, "")
    };
    let (name, version) = base.rsplit_once("_v")?;
    Some(ProcVersion {
        name: name.to_owned(),
        version: version.parse().ok()?,
        stream_suffix,
    })
}

/// Renders the versions table as the body of `cuda-headers/src/generated/versions.rs`.
pub fn render_versions(versions: &[ProcVersion]) -> String {
    let mut out = String::from("pub static PROC_VERSIONS: &[ProcVersion] = &[\n");
    for v in versions {
        let stream = match v.stream_suffix {
            "_ptds" => "PerThreadDefaultStream",
            "_ptsz" => "PerThreadStreamZero",
            _ => "Legacy",
        };
        let _ = writeln!(
            out,
            "ProcVersion {{ name: {:?}, version: {}, stream: StreamVariant::{stream} }},",
            v.name, v.version
        );
    }
    out.push_str("];\n");
    out
}

/// One `CUresult` enumerator with its name and a description from the header's doc comment (for
/// the constants' docs; what the driver itself answers is `cuda-headers/probe/errstrings-*.tsv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultCode {
    /// The numeric value.
    pub code: u32,
    /// The enumerator name, e.g. `CUDA_ERROR_INVALID_VALUE`.
    pub name: String,
    /// The first sentence of the header's comment, cleaned of Doxygen markup.
    pub description: String,
}

/// Collects the `CUresult` enumerators from the merged bindgen items (`impl cudaError_enum`).
///
/// # Errors
/// [`GenerateError::Output`] when no enumerator is found.
pub fn result_codes(items: &[Item]) -> Result<Vec<ResultCode>, GenerateError> {
    let mut codes = Vec::new();
    for item in items {
        let Item::Impl(block) = item else { continue };
        if block.trait_.is_some() {
            continue;
        }
        let syn::Type::Path(path) = &*block.self_ty else {
            continue;
        };
        if !path.path.is_ident("cudaError_enum") {
            continue;
        }
        for member in &block.items {
            let ImplItem::Const(constant) = member else {
                continue;
            };
            let Expr::Call(call) = &constant.expr else {
                continue;
            };
            let Some(Expr::Lit(lit)) = call.args.first() else {
                continue;
            };
            let Lit::Int(int) = &lit.lit else { continue };
            let code = int
                .base10_parse::<u32>()
                .map_err(|e| GenerateError::Output(format!("{}: {e}", constant.ident)))?;
            let doc: Vec<String> = constant
                .attrs
                .iter()
                .filter_map(|a| match &a.meta {
                    syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                        Expr::Lit(syn::ExprLit {
                            lit: Lit::Str(s), ..
                        }) => Some(s.value()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            codes.push(ResultCode {
                code,
                name: constant.ident.to_string(),
                description: first_sentence(&doc.join(" ")),
            });
        }
    }
    if codes.is_empty() {
        return Err(GenerateError::Output(
            "no CUresult enumerators found".to_owned(),
        ));
    }
    codes.sort_by(|a, b| (a.code, &a.name).cmp(&(b.code, &b.name)));
    Ok(codes)
}

/// The first sentence of a Doxygen comment, with `::name` and `\\p`-style commands removed.
fn first_sentence(doc: &str) -> String {
    let words: Vec<&str> = doc
        .split_whitespace()
        .filter(|w| !w.starts_with('\\'))
        .collect();
    let text = words.join(" ").replace("::", "");
    let sentence = match text.find(". ") {
        Some(end) => &text[..=end],
        None => text.as_str(),
    };
    let sentence = sentence.trim();
    if sentence.is_empty() {
        "no description in cuda.h".to_owned()
    } else {
        sentence.to_owned()
    }
}

/// Renders one named constant per non-zero `CUresult` code as the body of
/// `cuda-headers/src/generated/errors.rs`, an `impl CuError` block: `CUDA_ERROR_INVALID_VALUE`
/// becomes `CuError::INVALID_VALUE`.
pub fn render_errors(codes: &[ResultCode]) -> String {
    let mut out = String::from("impl CuError {\n");
    for c in codes.iter().filter(|c| c.code != 0) {
        let short = c.name.strip_prefix("CUDA_ERROR_").unwrap_or(&c.name);
        let _ = writeln!(
            out,
            "    /// `{}` ({}): {}\n    pub const {short}: Self = Self::from_const(CUresult::{});",
            c.name, c.code, c.description, c.name
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfn_names_split_into_name_version_and_stream() {
        assert_eq!(
            parse_pfn("cuMemcpyHtoD_v7000_ptds"),
            Some(ProcVersion {
                name: "cuMemcpyHtoD".into(),
                version: 7000,
                stream_suffix: "_ptds"
            })
        );
        assert_eq!(
            parse_pfn("cuGetProcAddress_v12000").map(|v| (v.name, v.version)),
            Some(("cuGetProcAddress".into(), 12000))
        );
        assert_eq!(parse_pfn("cuInit"), None);
    }

    #[test]
    fn first_sentence_drops_markup() {
        assert_eq!(
            first_sentence(" \\deprecated This indicates that ::cuInit() failed.  More \\p text."),
            "This indicates that cuInit() failed."
        );
        assert_eq!(first_sentence(""), "no description in cuda.h");
    }

    #[test]
    fn errors_are_named_without_the_prefix_and_success_is_left_out() {
        let code = |code, name: &str| ResultCode {
            code,
            name: name.to_owned(),
            description: "Text.".to_owned(),
        };
        let rendered =
            render_errors(&[code(0, "CUDA_SUCCESS"), code(1, "CUDA_ERROR_INVALID_VALUE")]);
        assert_eq!(
            rendered,
            "impl CuError {\n    /// `CUDA_ERROR_INVALID_VALUE` (1): Text.\n    \
             pub const INVALID_VALUE: Self = Self::from_const(CUresult::CUDA_ERROR_INVALID_VALUE);\n}\n"
        );
    }
}
