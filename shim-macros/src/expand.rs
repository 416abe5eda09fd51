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

/// `template, list <= [name, …], …`, or `template, custom <= calls`: the call table's guest
/// halves ([`crate::calls`]), each handed over with `guest: path::to::module`.
pub struct Invocation {
    /// The `macro_rules!` template each function is handed to.
    pub template: Path,
    /// Each list's name and members.
    pub lists: Vec<(Ident, Vec<Ident>)>,
    /// Whether `custom` is the call table's guest halves.
    pub from_table: bool,
}

impl Parse for Invocation {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let template: Path = input.parse()?;
        let mut lists = Vec::new();
        let mut from_table = false;
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
            if list == "custom" && input.peek(syn::Ident) {
                let source: Ident = input.parse()?;
                if source != "calls" {
                    return Err(syn::Error::new(
                        source.span(),
                        "expected `calls` (the call table) or a bracketed list",
                    ));
                }
                from_table = true;
                let names = crate::calls::guest_names()
                    .into_iter()
                    .map(|n| Ident::new(n, source.span()))
                    .collect();
                lists.push((list, names));
                continue;
            }
            let content;
            bracketed!(content in input);
            let names = content.parse_terminated(Ident::parse, Token![,])?;
            lists.push((list, names.into_iter().collect()));
        }
        Ok(Self {
            template,
            lists,
            from_table,
        })
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
        if let (true, Some(guest)) = (
            invocation.from_table && kind == "custom",
            crate::calls::guest_of(&name.to_string()),
        ) {
            let guest: Path = syn::parse_str(guest).expect("the call table's guest paths parse");
            return quote! {
                #template! {
                    kind: #kind,
                    name: #name,
                    guest: #guest,
                    params: (#(#param_names: #param_types),*),
                    ret: #ret
                }
            };
        }
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

/// Expands `signature_fingerprint!()`: FNV-1a over every function's name and parameter types and
/// the call table, a `u64` literal. Guest and host compare it in the handshake, so builds from different signature
/// lists (whose call ids would disagree) refuse each other.
pub fn fingerprint(functions: &[CudaFunction]) -> TokenStream {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |text: &str| {
        for byte in text.bytes().chain([b';']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in functions {
        let params = &f.params;
        let types = params.iter().map(|p| &p.ty);
        feed(&format!("{}({})", f.name, quote!(#(#types),*)));
    }
    feed(&crate::calls::fingerprint_text());
    quote! { #hash }
}

/// Expands `call_routes!(template)`: ONE template call listing every name with a host half in
/// the call table, `{ id: 17, name: cuX, host: module::function }`, sorted by id.
pub fn routes(template: &Path, names: &[&str]) -> syn::Result<TokenStream> {
    let span = proc_macro2::Span::call_site();
    crate::calls::validate(names).map_err(|e| syn::Error::new(span, e))?;
    let mut routes: Vec<(u32, &str, &str)> = crate::calls::host_routes()
        .into_iter()
        .map(|(name, host)| {
            let id = names.binary_search(&name).expect("validated") as u32;
            (id, name, host)
        })
        .collect();
    routes.sort_unstable();
    let entries = routes.iter().map(|(id, name, host)| {
        let name = Ident::new(name, span);
        let host: Path = syn::parse_str(host).expect("the call table's host paths parse");
        quote! { { id: #id, name: #name, host: #host } }
    });
    Ok(quote! { #template! { #(#entries)* } })
}

/// Expands `posted_policies!()`: a `[u8; N]` indexed by call id, each function's
/// [`crate::calls::Posted`] code. A function posted as a generated forwarder (`Always`,
/// `WhenAllowed`) must have one whose parameters all travel by value: a posted call gets no
/// response, so it can have no outputs.
pub fn posted_policies(
    classified: &[(CudaFunction, Option<Vec<ParamKind>>)],
) -> Result<TokenStream, String> {
    let names: Vec<String> = classified.iter().map(|(f, _)| f.name.to_string()).collect();
    let sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::calls::validate(&sorted)?;
    let mut codes = Vec::with_capacity(classified.len());
    for (f, kinds) in classified {
        let name = f.name.to_string();
        let posted = crate::calls::posted_of(&name);
        if matches!(
            posted,
            crate::calls::Posted::Always | crate::calls::Posted::WhenAllowed
        ) {
            let values_only = kinds
                .as_ref()
                .is_some_and(|k| k.iter().all(|k| matches!(k, ParamKind::Value)));
            if !values_only {
                return Err(format!(
                    "call table: `{name}` is posted as a generated forwarder, which it needs \
                     with by-value parameters only"
                ));
            }
        }
        codes.push(posted.code());
    }
    Ok(quote! { [#(#codes),*] })
}
