//! Proc macros over the CUDA signature list (`cuda-headers/src/generated/cuda.rs` plus
//! `cuda-headers/src/supplement.rs`). They only expand the list; what each stub does is an ordinary
//! `macro_rules!` template in the calling crate.
//!
//! ```ignore
//! macro_rules! stub {
//!     (kind: custom, name: $name:ident, params: ($($p:ident: $t:ty),*), ret: $ret:ty) => { /* … */ };
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

mod expand;
mod model;
mod signatures;

use proc_macro::TokenStream;

/// Hands every driver function to a `macro_rules!` template, sorted by name.
///
/// Syntax: `cuda_functions!(template_path, custom <= [cuA, cuB, …])`; the list is optional. Each
/// function becomes one call
/// `template_path! { kind: custom|default, name: cuX, params: (a: T, b: U), ret: R }`, where `kind`
/// is `custom` for names in the `custom` list and `default` otherwise. A name that is not in the
/// signature list, or that is listed twice, is a compile error.
#[proc_macro]
pub fn cuda_functions(input: TokenStream) -> TokenStream {
    let invocation = syn::parse_macro_input!(input as expand::Invocation);
    let result = signatures::all_functions()
        .map_err(|e| syn::Error::new(proc_macro2::Span::call_site(), e))
        .and_then(|functions| expand::functions(&invocation, &functions));
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
    match signatures::all_functions() {
        Ok(functions) => expand::names(&functions).into(),
        Err(e) => syn::Error::new(proc_macro2::Span::call_site(), e)
            .to_compile_error()
            .into(),
    }
}
