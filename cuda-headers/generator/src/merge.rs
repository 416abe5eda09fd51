//! Merging the two bindgen passes into one sorted item list and one sorted function list.

use std::collections::BTreeMap;

use quote::ToTokens;
use syn::{ForeignItem, ForeignItemFn, Item};

use crate::error::GenerateError;

/// The merged content of both passes.
#[derive(Debug, Default)]
pub struct Merged {
    /// Types, constants and impls, sorted by the name they define (see [`sort_key`]).
    pub items: Vec<Item>,
    /// Every `extern` function, by name, without doc comments.
    pub functions: BTreeMap<String, ForeignItemFn>,
}

impl Merged {
    /// Adds one pass's output. Items already present (same tokens) are skipped; a different item
    /// with the same name, or a function whose signature differs between passes, is an error.
    ///
    /// # Errors
    /// [`GenerateError::Output`] for unparsable output or conflicting declarations.
    pub fn add_pass(&mut self, source: &str) -> Result<(), GenerateError> {
        let file = syn::parse_file(source)
            .map_err(|e| GenerateError::Output(format!("bindgen output does not parse: {e}")))?;
        let mut by_key: BTreeMap<(String, u8), Vec<String>> = BTreeMap::new();
        for item in &self.items {
            let (name, rank) = sort_key(item);
            by_key.entry((name, rank)).or_default().push(tokens(item));
        }
        for item in file.items {
            match item {
                Item::ForeignMod(block) => {
                    for foreign in block.items {
                        match foreign {
                            ForeignItem::Fn(mut function) => {
                                function.attrs.retain(|a| !a.path().is_ident("doc"));
                                self.add_function(function)?;
                            }
                            other => {
                                return Err(GenerateError::Output(format!(
                                    "unexpected extern item `{}`",
                                    tokens(&other)
                                )))
                            }
                        }
                    }
                }
                item => {
                    let (name, rank) = sort_key(&item);
                    let text = tokens(&item);
                    let existing = by_key.entry((name.clone(), rank)).or_default();
                    if existing.contains(&text) {
                        continue;
                    }
                    if !existing.is_empty() && !matches!(item, Item::Impl(_)) {
                        return Err(GenerateError::Output(format!(
                            "`{name}` differs between the two bindgen passes"
                        )));
                    }
                    existing.push(text);
                    self.items.push(item);
                }
            }
        }
        self.merge_inherent_impls()?;
        self.items
            .sort_by_cached_key(|item| (sort_key(item), tokens(item)));
        Ok(())
    }

    /// Folds the inherent impls of one type (one per pass when the passes see different
    /// enumerators) into the first, keeping each associated item once.
    fn merge_inherent_impls(&mut self) -> Result<(), GenerateError> {
        let mut first_impl: BTreeMap<String, usize> = BTreeMap::new();
        let mut merged_items = Vec::with_capacity(self.items.len());
        for item in std::mem::take(&mut self.items) {
            let Item::Impl(block) = item else {
                merged_items.push(item);
                continue;
            };
            if block.trait_.is_some() {
                merged_items.push(Item::Impl(block));
                continue;
            }
            let name = sort_key(&Item::Impl(block.clone())).0;
            let Some(&index) = first_impl.get(&name) else {
                first_impl.insert(name, merged_items.len());
                merged_items.push(Item::Impl(block));
                continue;
            };
            let Item::Impl(target) = &mut merged_items[index] else {
                unreachable!("first_impl indexes only impls");
            };
            for member in block.items {
                let ident = impl_item_name(&member);
                match target.items.iter().find(|m| impl_item_name(m) == ident) {
                    None => target.items.push(member),
                    Some(existing) if without_docs(existing) == without_docs(&member) => {}
                    Some(_) => {
                        return Err(GenerateError::Output(format!(
                            "`{name}::{ident}` differs between the two bindgen passes"
                        )))
                    }
                }
            }
            target
                .items
                .sort_by_cached_key(|m| (impl_item_order(m), impl_item_name(m)));
        }
        self.items = merged_items;
        Ok(())
    }

    fn add_function(&mut self, function: ForeignItemFn) -> Result<(), GenerateError> {
        let name = function.sig.ident.to_string();
        match self.functions.get(&name) {
            Some(existing) if abi_types(&existing.sig) != abi_types(&function.sig) => {
                Err(GenerateError::Output(format!(
                    "`{name}` has different signatures in the two bindgen passes"
                )))
            }
            Some(_) => Ok(()),
            None => {
                self.functions.insert(name, function);
                Ok(())
            }
        }
    }
}

/// The name an item defines and a rank that keeps a type before its impls.
pub fn sort_key(item: &Item) -> (String, u8) {
    match item {
        Item::Type(t) => (t.ident.to_string(), 0),
        Item::Struct(s) => (s.ident.to_string(), 0),
        Item::Union(u) => (u.ident.to_string(), 0),
        Item::Enum(e) => (e.ident.to_string(), 0),
        Item::Const(c) => (c.ident.to_string(), 0),
        Item::Static(s) => (s.ident.to_string(), 0),
        Item::Fn(f) => (f.sig.ident.to_string(), 0),
        Item::Impl(i) => {
            let name = match &*i.self_ty {
                syn::Type::Path(p) => p
                    .path
                    .segments
                    .last()
                    .map(|s| s.ident.to_string())
                    .unwrap_or_default(),
                other => tokens(other),
            };
            (name, if i.trait_.is_some() { 2 } else { 1 })
        }
        other => (tokens(other), 3),
    }
}

fn impl_item_name(member: &syn::ImplItem) -> String {
    match member {
        syn::ImplItem::Const(c) => c.ident.to_string(),
        syn::ImplItem::Fn(f) => f.sig.ident.to_string(),
        syn::ImplItem::Type(t) => t.ident.to_string(),
        other => tokens(other),
    }
}

/// Associated consts keep their value order (enumerators read best in value order); the rest follow.
fn impl_item_order(member: &syn::ImplItem) -> (u8, String) {
    match member {
        syn::ImplItem::Const(c) => (0, const_value_key(&c.expr)),
        _ => (1, String::new()),
    }
}

/// A sortable key for an enumerator value such as `CUresult(999)`: zero-padded digits.
fn const_value_key(expr: &syn::Expr) -> String {
    let text = tokens(expr);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    format!("{:0>24}{text}", digits)
}

fn without_docs(member: &syn::ImplItem) -> String {
    let mut member = member.clone();
    if let syn::ImplItem::Const(c) = &mut member {
        c.attrs.retain(|a| !a.path().is_ident("doc"));
    }
    tokens(&member)
}

/// A signature's parameter and return types: parameter names may differ between declarations
/// (`cuStreamCopyAttributes(dst, src)` vs `(dstStream, srcStream)`) without changing the ABI.
fn abi_types(sig: &syn::Signature) -> String {
    let params: Vec<String> = sig
        .inputs
        .iter()
        .map(|arg| match arg {
            syn::FnArg::Typed(typed) => tokens(&typed.ty),
            syn::FnArg::Receiver(r) => tokens(r),
        })
        .collect();
    format!("({}) {}", params.join(", "), tokens(&sig.output))
}

fn tokens(node: &impl ToTokens) -> String {
    node.to_token_stream().to_string()
}
