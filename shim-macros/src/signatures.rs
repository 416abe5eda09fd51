//! Loading the signature list: the generated file plus the supplementary one, both from `cuda-headers`.
//!
//! The files are embedded with `include_str!`, so cargo rebuilds this crate, and everything that
//! expands its macros, whenever either file changes.
//!
//! The 9,000-line generated file is parsed once per compiler process ([`listing`]), not once per
//! expansion. What is kept is plain text ([`Entry`]): syn values hold the compiler's token handles,
//! which are valid only during the expansion that made them. A macro that needs syn values rebuilds
//! them from the text, which costs a few thousand one-type parses instead of the whole file.

use std::sync::OnceLock;

use proc_macro2::Ident;
use quote::ToTokens;
use syn::{ForeignItem, Item, Type};

use crate::classify::{ParamKind, TypeTable};
use crate::handwritten::HANDWRITTEN;
use crate::model::{CudaFunction, Origin, Param};

/// `cuda-headers/src/generated/cuda.rs`.
const GENERATED: &str = include_str!("../../cuda-headers/src/generated/cuda.rs");
/// `cuda-headers/src/supplement.rs`.
const SUPPLEMENT: &str = include_str!("../../cuda-headers/src/supplement.rs");

/// Every function of both files, sorted by name.
///
/// # Errors
/// A message when a file does not parse, a function appears twice, or the list is empty.
pub fn all_functions() -> Result<Vec<CudaFunction>, String> {
    listing()?.iter().map(Entry::function).collect()
}

/// Every function name, sorted: the index of a name is its wire call id.
///
/// # Errors
/// As for [`all_functions`].
pub fn names() -> Result<Vec<&'static str>, String> {
    Ok(listing()?.iter().map(|e| e.name.as_str()).collect())
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
    listing()?
        .iter()
        .map(|entry| {
            let kinds = match &entry.kinds {
                None => None,
                Some(kinds) => Some(kinds.iter().map(KindText::kind).collect::<Result<_, _>>()?),
            };
            Ok((entry.function()?, kinds))
        })
        .collect()
}

/// One function as text, with its classification: what outlives an expansion.
#[derive(Debug)]
struct Entry {
    name: String,
    /// `(name, type)` of each parameter.
    params: Vec<(String, String)>,
    ret: String,
    origin: Origin,
    /// `None` when the generated marshalling does not apply.
    kinds: Option<Vec<KindText>>,
}

/// A [`ParamKind`] as text.
#[derive(Debug)]
enum KindText {
    Value,
    InOut(String),
    Input(String),
}

/// The parsed, classified list, or why it could not be read: computed by the first expansion in
/// this compiler process.
static LISTING: OnceLock<Result<Vec<Entry>, String>> = OnceLock::new();

fn listing() -> Result<&'static [Entry], String> {
    LISTING
        .get_or_init(|| {
            let (functions, table) = load()?;
            Ok(functions
                .iter()
                .map(|f| {
                    let kinds = if HANDWRITTEN.iter().any(|h| f.name == h) {
                        None
                    } else {
                        table.classify(f).ok()
                    };
                    Entry::of(f, kinds.as_deref())
                })
                .collect())
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn text(tokens: &impl ToTokens) -> String {
    tokens.to_token_stream().to_string()
}

fn parse<T: syn::parse::Parse>(text: &str) -> Result<T, String> {
    syn::parse_str(text).map_err(|e| format!("cached signature text `{text}`: {e}"))
}

impl Entry {
    fn of(f: &CudaFunction, kinds: Option<&[ParamKind]>) -> Self {
        Self {
            name: f.name.to_string(),
            params: f
                .params
                .iter()
                .map(|p| (p.name.to_string(), text(&p.ty)))
                .collect(),
            ret: text(&f.ret),
            origin: f.origin,
            kinds: kinds.map(|kinds| {
                kinds
                    .iter()
                    .map(|k| match k {
                        ParamKind::Value => KindText::Value,
                        ParamKind::InOut(t) => KindText::InOut(text(t)),
                        ParamKind::Input(t) => KindText::Input(text(t)),
                    })
                    .collect()
            }),
        }
    }

    fn function(&self) -> Result<CudaFunction, String> {
        Ok(CudaFunction {
            name: parse::<Ident>(&self.name)?,
            params: self
                .params
                .iter()
                .map(|(name, ty)| {
                    Ok(Param {
                        name: parse(name)?,
                        ty: parse(ty)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            ret: parse::<Type>(&self.ret)?,
            origin: self.origin,
        })
    }
}

impl KindText {
    fn kind(&self) -> Result<ParamKind, String> {
        Ok(match self {
            Self::Value => ParamKind::Value,
            Self::InOut(t) => ParamKind::InOut(parse(t)?),
            Self::Input(t) => ParamKind::Input(parse(t)?),
        })
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
                    let gate = crate::gate::describe(f, &kinds);
                    let kinds: Vec<String> = kinds
                        .iter()
                        .map(|k| match k {
                            ParamKind::Value => "value".to_owned(),
                            ParamKind::InOut(t) => format!("inout {}", quote::quote!(#t)),
                            ParamKind::Input(t) => format!("input {}", quote::quote!(#t)),
                        })
                        .collect();
                    if gate.is_empty() {
                        format!("forwarded [{}]", kinds.join(", "))
                    } else {
                        format!(
                            "forwarded [{}] gate [{}]",
                            kinds.join(", "),
                            gate.join(", ")
                        )
                    }
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
