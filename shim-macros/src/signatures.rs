//! Loading the signature list: the generated file plus the supplementary one, both from `cuda-headers`.
//!
//! The files are embedded with `include_str!`, so cargo rebuilds this crate, and everything that
//! expands its macros, whenever either file changes.

use syn::{ForeignItem, Item};

use crate::classify::{ParamKind, TypeTable};
use crate::handwritten::HANDWRITTEN;
use crate::model::{CudaFunction, Origin};

/// `cuda-headers/src/generated/cuda.rs`.
const GENERATED: &str = include_str!("../../cuda-headers/src/generated/cuda.rs");
/// `cuda-headers/src/supplement.rs`.
const SUPPLEMENT: &str = include_str!("../../cuda-headers/src/supplement.rs");

/// Every function of both files, sorted by name.
///
/// # Errors
/// A message when a file does not parse, a function appears twice, or the list is empty.
pub fn all_functions() -> Result<Vec<CudaFunction>, String> {
    load().map(|(functions, _)| functions)
}

/// A function with its parameters' kinds, or `None` when it is hand-written.
pub type Classified = (CudaFunction, Option<Vec<ParamKind>>);

/// Every function with how its parameters travel, or `None` when the generated marshalling does
/// not apply (the classifier refused it, or [`HANDWRITTEN`] lists it). Same order as
/// [`all_functions`]; the index is the function's wire call id.
///
/// # Errors
/// As for [`all_functions`].
pub fn classified_functions() -> Result<Vec<Classified>, String> {
    let (functions, table) = load()?;
    Ok(functions
        .into_iter()
        .map(|f| {
            let kinds = if HANDWRITTEN.iter().any(|h| f.name == h) {
                None
            } else {
                table.classify(&f).ok()
            };
            (f, kinds)
        })
        .collect())
}

/// One line per function: `forwarded` with its parameter kinds, or why it is not generated.
/// Pinned by a snapshot so that every change to what the wire protocol generates is reviewed.
#[cfg(test)]
pub fn classification_report() -> Result<String, String> {
    use std::fmt::Write as _;
    let (functions, table) = load()?;
    let mut out = String::new();
    for f in &functions {
        let verdict = if HANDWRITTEN.iter().any(|h| f.name == h) {
            "handwritten".to_owned()
        } else {
            match table.classify(f) {
                Ok(kinds) => {
                    let kinds: Vec<String> = kinds
                        .iter()
                        .map(|k| match k {
                            ParamKind::Value => "value".to_owned(),
                            ParamKind::InOut(t) => format!("inout {}", quote::quote!(#t)),
                            ParamKind::Input(t) => format!("input {}", quote::quote!(#t)),
                        })
                        .collect();
                    format!("forwarded [{}]", kinds.join(", "))
                }
                Err(why) => format!("not generated: {}", why.0),
            }
        };
        let _ = writeln!(out, "{}: {verdict}", f.name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn classification_is_pinned() {
        let report = super::classification_report().unwrap();
        let forwarded = report.lines().filter(|l| l.contains(": forwarded")).count();
        assert!(forwarded > 200, "only {forwarded} functions forwarded");
        insta::assert_snapshot!(report);
    }
}

fn load() -> Result<(Vec<CudaFunction>, TypeTable), String> {
    let mut functions = Vec::new();
    let mut table = None;
    for (source, origin, file) in [
        (
            GENERATED,
            Origin::Header,
            "cuda-headers/src/generated/cuda.rs",
        ),
        (
            SUPPLEMENT,
            Origin::Supplement,
            "cuda-headers/src/supplement.rs",
        ),
    ] {
        let parsed = syn::parse_file(source).map_err(|e| format!("{file}: {e}"))?;
        if origin == Origin::Header {
            table = Some(TypeTable::from_items(&parsed.items));
        }
        for item in parsed.items {
            let Item::ForeignMod(block) = item else {
                continue;
            };
            for foreign in block.items {
                if let ForeignItem::Fn(function) = foreign {
                    functions.push(
                        CudaFunction::from_foreign(&function, origin)
                            .map_err(|e| format!("{file}: {e}"))?,
                    );
                }
            }
        }
    }
    functions.sort_by_key(|f| f.name.to_string());
    if let Some(pair) = functions.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(format!("`{}` is declared twice", pair[0].name));
    }
    if functions.is_empty() {
        return Err("the signature list is empty".to_owned());
    }
    let table = table.ok_or("the generated file was not read")?;
    Ok((functions, table))
}
