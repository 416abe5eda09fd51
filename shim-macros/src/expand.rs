//! The macros' input syntax and their expansion.

use std::collections::BTreeMap;

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{bracketed, Path, Token};

use crate::model::CudaFunction;

/// The lists a caller may name. A function in none of them is `default`.
pub const LIST_NAMES: &[&str] = &["custom"];

/// `template, list <= [name, …], …`
pub struct Invocation {
    /// The `macro_rules!` template each function is handed to.
    pub template: Path,
    /// Each list's name and members.
    pub lists: Vec<(Ident, Vec<Ident>)>,
}

impl Parse for Invocation {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let template: Path = input.parse()?;
        let mut lists = Vec::new();
        while input.parse::<Option<Token![,]>>()?.is_some() {
            if input.is_empty() {
                break;
            }
            let list: Ident = input.parse()?;
            if !LIST_NAMES.iter().any(|n| list == n) {
                return Err(syn::Error::new(
                    list.span(),
                    format!("unknown list `{list}`; expected one of {LIST_NAMES:?}"),
                ));
            }
            input.parse::<Token![<=]>()?;
            let content;
            bracketed!(content in input);
            let names = content.parse_terminated(Ident::parse, Token![,])?;
            lists.push((list, names.into_iter().collect()));
        }
        Ok(Self { template, lists })
    }
}

/// Expands `cuda_functions!`: one template call per function.
pub fn functions(invocation: &Invocation, functions: &[CudaFunction]) -> syn::Result<TokenStream> {
    let mut kind_of: BTreeMap<String, Ident> = BTreeMap::new();
    for (list, names) in &invocation.lists {
        for name in names {
            if functions
                .binary_search_by(|f| f.name.to_string().cmp(&name.to_string()))
                .is_err()
            {
                return Err(syn::Error::new(
                    name.span(),
                    format!("`{name}` is not in the CUDA signature list"),
                ));
            }
            if let Some(previous) = kind_of.insert(name.to_string(), list.clone()) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("`{name}` is in both `{previous}` and `{list}`"),
                ));
            }
        }
    }
    let template = &invocation.template;
    let calls = functions.iter().map(|f| {
        let name = &f.name;
        let kind = kind_of
            .get(&name.to_string())
            .cloned()
            .unwrap_or_else(|| Ident::new("default", proc_macro2::Span::call_site()));
        let param_names = f.params.iter().map(|p| &p.name);
        let param_types = f.params.iter().map(|p| &p.ty);
        let ret = &f.ret;
        quote! {
            #template! {
                kind: #kind,
                name: #name,
                params: (#(#param_names: #param_types),*),
                ret: #ret
            }
        }
    });
    Ok(quote! { #(#calls)* })
}

/// Expands `cuda_function_names!`: a sorted `&[&str]` of every name.
pub fn names(functions: &[CudaFunction]) -> TokenStream {
    let names = functions.iter().map(|f| f.name.to_string());
    quote! { &[#(#names),*] }
}
