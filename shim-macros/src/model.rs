//! The function model: one [`CudaFunction`] per driver export, parsed from the signature list.
//! Kept free of any one macro's needs so that marshalling and host dispatch can reuse it.

use proc_macro2::Ident;
use syn::{FnArg, ForeignItemFn, Pat, ReturnType, Type};

/// Where a signature was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `cuda-headers/src/generated/cuda.rs`, generated from `cuda.h` and friends.
    Header,
    /// `cuda-headers/src/supplement.rs`, the hand-written list.
    Supplement,
}

/// One parameter: its C name and Rust type.
#[derive(Debug, Clone)]
pub struct Param {
    /// The parameter's name as declared in the header.
    pub name: Ident,
    /// Its type, as bindgen wrote it (e.g. `*mut CUdeviceptr`).
    pub ty: Type,
}

/// One driver-API function.
#[derive(Debug, Clone)]
pub struct CudaFunction {
    /// The exported symbol, e.g. `cuMemAlloc_v2`.
    pub name: Ident,
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The return type; `()` when the function returns nothing.
    pub ret: Type,
    /// Which file declared it. Supplement entries may have unknown parameters, so marshalling must
    /// never forward them.
    #[allow(dead_code)]
    pub origin: Origin,
}

impl CudaFunction {
    /// Builds the model from one `extern` declaration.
    ///
    /// # Errors
    /// A message for variadic functions or parameters that are not plain identifiers.
    pub fn from_foreign(item: &ForeignItemFn, origin: Origin) -> Result<Self, String> {
        let sig = &item.sig;
        if sig.variadic.is_some() {
            return Err(format!("`{}` is variadic", sig.ident));
        }
        let params = sig
            .inputs
            .iter()
            .map(|arg| match arg {
                FnArg::Typed(typed) => match &*typed.pat {
                    Pat::Ident(p) => Ok(Param {
                        name: p.ident.clone(),
                        ty: (*typed.ty).clone(),
                    }),
                    _ => Err(format!(
                        "`{}` has a parameter without a plain name",
                        sig.ident
                    )),
                },
                FnArg::Receiver(_) => Err(format!("`{}` has a receiver", sig.ident)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ret = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        Ok(Self {
            name: sig.ident.clone(),
            params,
            ret,
            origin,
        })
    }
}
