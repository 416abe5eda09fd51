//! Proc macros over the CUDA signature list (`cuda-headers/src/generated/cuda.rs` plus
//! `cuda-headers/src/supplement.rs`). They only expand the list; what each stub does is an ordinary
//! `macro_rules!` template in the calling crate.
//!
//! ```ignore
//! macro_rules! stub {
//!     (kind: custom, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => { /* … */ };
//!     (kind: forwarded, name: $name:ident, id: $id:expr, params: ($($p:ident: $t:ty),*),
//!      marshal: $marshal:tt, ret: $ret:ty) => { /* … */ };
//!     (kind: default, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => { /* … */ };
//! }
//! shim_macros::cuda_functions!(stub, custom <= [cuGetErrorName, cuGetErrorString]);
//! const ALL: &[&str] = shim_macros::cuda_function_names!();
//! ```
//!
//! The types in `params` and `ret` are written as in `cuda-headers` (`CUresult`, `*mut CUdeviceptr`,
//! `::std::os::raw::c_uint`), so the caller must have `cuda_headers::*` and
//! `cuda_headers::supplement::*` in scope.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod calls;
mod classify;
mod expand;
mod gate;
mod handwritten;
mod model;
mod signatures;

use proc_macro::TokenStream;

/// Hands every driver function to a `macro_rules!` template, sorted by name.
///
/// Syntax: `cuda_functions!(template_path, custom <= [cuA, cuB, …])`, or
/// `cuda_functions!(template_path, custom <= calls)` for the call table's guest halves; the list
/// is optional. Each function becomes one call of one of three kinds:
///
/// - `template_path! { kind: custom, name: cuX, params: (a: T, b: U), ret: R }` for names in the
///   `custom` list; from the call table, with `guest: path::to::module` after the name (the
///   module that holds `pub unsafe fn cuX`);
/// - otherwise, when the generated marshalling applies (see [`cuda_forwarders`]),
///   `template_path! { kind: forwarded, name: cuX, id: 17, params: (…), marshal: […], ret: R }`;
/// - otherwise `template_path! { kind: default, name: cuX, params: (…), ret: R }`.
///
/// A name that is not in the signature list, or that is listed twice, is a compile error.
#[proc_macro]
pub fn cuda_functions(input: TokenStream) -> TokenStream {
    let invocation = syn::parse_macro_input!(input as expand::Invocation);
    let result = signatures::classified_functions()
        .map_err(|e| syn::Error::new(proc_macro2::Span::call_site(), e))
        .and_then(|classified| expand::functions(&invocation, &classified));
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Every driver function name, sorted, as a `&'static [&'static str]` expression.
#[proc_macro]
pub fn cuda_function_names(input: TokenStream) -> TokenStream {
    if !input.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "takes no arguments")
            .to_compile_error()
            .into();
    }
    match signatures::names() {
        Ok(names) => expand::names(&names).into(),
        Err(e) => syn::Error::new(proc_macro2::Span::call_site(), e)
            .to_compile_error()
            .into(),
    }
}

/// Hands every function with generated marshalling to a template in ONE call:
/// `template! { { name: cuX, id: 17, params: (a: T, …), marshal: [(a: T => value), (b: *mut U => inout U), …], gate: […] } … }`.
///
/// `marshal` says how each parameter travels: `value` (by value), `inout U` (`*mut U`: sent, and
/// sent back) or `input U` (`*const U`: sent). `gate: [(a => admit Stream), (p => mint Event), …]`
/// says which parameters are handles the host's per-client gate admits, records or forgets
/// (`gate.rs`). `id` is the wire call id (the function's index in
/// the sorted signature list). The shim builds its forwarders from it and the host its dispatch
/// table, so both sides agree by construction.
#[proc_macro]
pub fn cuda_forwarders(input: TokenStream) -> TokenStream {
    let template = syn::parse_macro_input!(input as syn::Path);
    match signatures::classified_functions() {
        Ok(classified) => expand::forwarders(&template, &classified).into(),
        Err(e) => syn::Error::new(proc_macro2::Span::call_site(), e)
            .to_compile_error()
            .into(),
    }
}

/// The wire call id of one function, a `u32` literal: `cuda_call_id!(cuMemcpyHtoD_v2)`.
#[proc_macro]
pub fn cuda_call_id(input: TokenStream) -> TokenStream {
    let name = syn::parse_macro_input!(input as proc_macro2::Ident);
    let result = signatures::names()
        .map_err(|e| syn::Error::new(name.span(), e))
        .and_then(|names| expand::call_id(&name, &names));
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Fingerprint of the signature list and the call table, a `u64` literal compared in the
/// handshake.
#[proc_macro]
pub fn signature_fingerprint(input: TokenStream) -> TokenStream {
    if !input.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "takes no arguments")
            .to_compile_error()
            .into();
    }
    match signatures::all_functions() {
        Ok(functions) => expand::fingerprint(&functions).into(),
        Err(e) => syn::Error::new(proc_macro2::Span::call_site(), e)
            .to_compile_error()
            .into(),
    }
}

/// Hands every name with a host half in the call table (`calls.rs`) to a template in ONE call:
/// `template! { { id: 17, name: cuX, host: module::function } … }`, sorted by wire call id. The
/// host builds its hand-written routes from it.
#[proc_macro]
pub fn call_routes(input: TokenStream) -> TokenStream {
    let template = syn::parse_macro_input!(input as syn::Path);
    let result = signatures::names()
        .map_err(|e| syn::Error::new(proc_macro2::Span::call_site(), e))
        .and_then(|names| expand::routes(&template, &names));
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Every function's posting policy from the call table, a `[u8; N]` indexed by wire call id:
/// 0 never posted, 1 posted whenever posting is on (a generated forwarder), 2 posted when its
/// guest half allows it (a generated forwarder), 3 posted by its hand-written guest half.
#[proc_macro]
pub fn posted_policies(input: TokenStream) -> TokenStream {
    if !input.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "takes no arguments")
            .to_compile_error()
            .into();
    }
    match signatures::classified_functions().and_then(|c| expand::posted_policies(&c)) {
        Ok(tokens) => tokens.into(),
        Err(e) => syn::Error::new(proc_macro2::Span::call_site(), e)
            .to_compile_error()
            .into(),
    }
}
