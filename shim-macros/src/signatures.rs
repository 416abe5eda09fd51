//! Loading the signature list: the generated file plus the supplementary one, both from `cuda-headers`.
//!
//! The files are embedded with `include_str!`, so cargo rebuilds this crate, and everything that
//! expands its macros, whenever either file changes.

use syn::{ForeignItem, Item};

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
    let mut functions = Vec::new();
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
    Ok(functions)
}
