//! The macros' input syntax and their expansion.

use std::collections::BTreeMap;

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{bracketed, Path, Token};

use crate::classify::ParamKind;
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

/// One function's `marshal: [...]` list: how each parameter travels.
fn marshal(function: &CudaFunction, kinds: &[ParamKind]) -> TokenStream {
    let entries = function.params.iter().zip(kinds).map(|(p, kind)| {
        let (name, ty) = (&p.name, &p.ty);
        match kind {
            ParamKind::Value => quote! { (#name: #ty => value) },
            ParamKind::InOut(inner) => quote! { (#name: #ty => inout #inner) },
            ParamKind::Input(inner) => quote! { (#name: #ty => input #inner) },
        }
    });
    quote! { [#(#entries),*] }
}

/// Expands `cuda_functions!`: one template call per function.
///
/// A function in a caller's list gets that list's kind; otherwise `forwarded` when the generated
/// marshalling applies (with its wire `id` and `marshal` list), else `default`.
pub fn functions(
    invocation: &Invocation,
    classified: &[(CudaFunction, Option<Vec<ParamKind>>)],
) -> syn::Result<TokenStream> {
    let functions: Vec<&CudaFunction> = classified.iter().map(|(f, _)| f).collect();
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
    let calls = classified.iter().enumerate().map(|(id, (f, kinds))| {
        let name = &f.name;
        let param_names = f.params.iter().map(|p| &p.name);
        let param_types = f.params.iter().map(|p| &p.ty);
        let ret = &f.ret;
        if let (None, Some(kinds)) = (kind_of.get(&name.to_string()), kinds) {
            let id = id as u32;
            let marshal = marshal(f, kinds);
            return quote! {
                #template! {
                    kind: forwarded,
                    name: #name,
                    id: #id,
                    params: (#(#param_names: #param_types),*),
                    marshal: #marshal,
                    ret: #ret
                }
            };
        }
        let kind = kind_of
            .get(&name.to_string())
            .cloned()
            .unwrap_or_else(|| Ident::new("default", proc_macro2::Span::call_site()));
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
pub fn names(names: &[&str]) -> TokenStream {
    quote! { &[#(#names),*] }
}

/// Expands `cuda_forwarders!`: ONE template call listing every function with generated
/// marshalling, so the template can build both per-function code and a dispatch table. Each
/// entry carries its handle-gate steps (`crate::gate::steps`).
pub fn forwarders(
    template: &Path,
    classified: &[(CudaFunction, Option<Vec<ParamKind>>)],
) -> TokenStream {
    let entries = classified.iter().enumerate().filter_map(|(id, (f, kinds))| {
        let kinds = kinds.as_ref()?;
        let id = id as u32;
        let name = &f.name;
        let param_names = f.params.iter().map(|p| &p.name);
        let param_types = f.params.iter().map(|p| &p.ty);
        let marshal = marshal(f, kinds);
        let gate = crate::gate::steps(f, kinds);
        Some(quote! {
            {
                name: #name, id: #id, params: (#(#param_names: #param_types),*), marshal: #marshal,
                gate: #gate
            }
        })
    });
    quote! { #template! { #(#entries)* } }
}

/// Expands `cuda_call_id!(cuX)`: the function's wire call id, a `u32` literal.
pub fn call_id(name: &Ident, names: &[&str]) -> syn::Result<TokenStream> {
    let id = names
        .binary_search(&name.to_string().as_str())
        .map_err(|_| {
            syn::Error::new(
                name.span(),
                format!("`{name}` is not in the CUDA signature list"),
            )
        })?;
    let id = id as u32;
    Ok(quote! { #id })
}

/// Expands `signature_fingerprint!()`: FNV-1a over every function's name and parameter types, a
/// `u64` literal. Guest and host compare it in the handshake, so builds from different signature
/// lists (whose call ids would disagree) refuse each other.
pub fn fingerprint(functions: &[CudaFunction]) -> TokenStream {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for f in functions {
        let params = &f.params;
        let types = params.iter().map(|p| &p.ty);
        let text = format!("{}({})", f.name, quote!(#(#types),*));
        for byte in text.bytes().chain([b';']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    quote! { #hash }
}
