//! Parameter classification: which functions the wire protocol can marshal with no knowledge
//! beyond the header.
//!
//! A parameter is one of:
//! - **value**: a scalar, enum, handle or plain struct passed by value;
//! - **inout**: `*mut T` of a plain `T`, one element; the guest sends the current value (or
//!   "NULL"), the host passes a pointer to its copy and sends the value back;
//! - **input**: `*const T` of a plain `T`, one element; sent, never sent back.
//!
//! "Plain" means every bit pattern is meaningful on the host: integers, floats, newtype enums,
//! handles (pointers to the header's opaque `struct X { _unused: [u8; 0] }`, which the host
//! hands out and takes back as opaque 64-bit values), and structs, unions and arrays made only of
//! those. A `void*`, `char*`, function pointer or pointer inside a struct is guest memory the
//! host cannot see: such a function needs a hand-written handler. So does any function with a
//! count or length parameter, whose pointers are likely arrays the header does not size.

use std::collections::{HashMap, HashSet};

use syn::{Fields, Item, Type, UseTree};

use crate::model::{CudaFunction, Origin};

/// How one parameter travels.
#[derive(Debug, Clone)]
pub enum ParamKind {
    /// By value.
    Value,
    /// `*mut T`, sent and sent back. Holds `T`.
    InOut(Type),
    /// `*const T`, sent only. Holds `T`.
    Input(Type),
}

/// Why a function cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclassifiable(pub String);

/// What the header says about each named type.
pub struct TypeTable {
    aliases: HashMap<String, Type>,
    structs: HashMap<String, Vec<Type>>,
    opaque: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Plain,
    Handle,
    Void,
    Char,
    Foreign,
}

impl TypeTable {
    /// Reads type aliases, structs and unions from a parsed file.
    pub fn from_items(items: &[Item]) -> Self {
        let mut table = Self {
            aliases: HashMap::new(),
            structs: HashMap::new(),
            opaque: HashSet::new(),
        };
        for item in items {
            match item {
                Item::Type(alias) => {
                    table
                        .aliases
                        .insert(alias.ident.to_string(), (*alias.ty).clone());
                }
                Item::Struct(s) => {
                    let fields: Vec<_> = s.fields.iter().map(|f| f.ty.clone()).collect();
                    let opaque = matches!(&s.fields, Fields::Named(named)
                        if named.named.len() == 1
                            && named.named[0].ident.as_ref().is_some_and(|i| i == "_unused"));
                    if opaque {
                        table.opaque.insert(s.ident.to_string());
                    }
                    table.structs.insert(s.ident.to_string(), fields);
                }
                Item::Union(u) => {
                    let fields = u.fields.named.iter().map(|f| f.ty.clone()).collect();
                    table.structs.insert(u.ident.to_string(), fields);
                }
                Item::Use(u) => table.add_use(&u.tree),
                _ => {}
            }
        }
        table
    }

    fn add_use(&mut self, tree: &UseTree) {
        match tree {
            UseTree::Path(p) => self.add_use(&p.tree),
            UseTree::Rename(r) => {
                let target: Type = syn::parse_str(&r.ident.to_string()).expect("an identifier");
                self.aliases.insert(r.rename.to_string(), target);
            }
            UseTree::Group(g) => g.items.iter().for_each(|t| self.add_use(t)),
            UseTree::Name(_) | UseTree::Glob(_) => {}
        }
    }

    fn class(&self, ty: &Type, depth: usize) -> Class {
        if depth > 32 {
            return Class::Foreign;
        }
        match ty {
            Type::Array(a) => match self.class(&a.elem, depth + 1) {
                Class::Plain | Class::Handle | Class::Char => Class::Plain,
                _ => Class::Foreign,
            },
            Type::Ptr(p) => match &*p.elem {
                Type::Path(path) if self.is_opaque(path, depth) => Class::Handle,
                _ => Class::Foreign,
            },
            Type::Path(path) => {
                let Some(last) = path.path.segments.last() else {
                    return Class::Foreign;
                };
                if !last.arguments.is_empty() {
                    // `Option<unsafe extern fn…>` and bindgen's generic helpers.
                    return if last.ident == "__BindgenBitfieldUnit" {
                        Class::Plain
                    } else {
                        Class::Foreign
                    };
                }
                let name = last.ident.to_string();
                match name.as_str() {
                    "c_void" => return Class::Void,
                    "c_char" | "c_schar" | "c_uchar" => return Class::Char,
                    "c_short" | "c_ushort" | "c_int" | "c_uint" | "c_long" | "c_ulong"
                    | "c_longlong" | "c_ulonglong" | "c_float" | "c_double" | "u8" | "u16"
                    | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "usize" | "isize" | "f32"
                    | "f64" => return Class::Plain,
                    _ => {}
                }
                if let Some(target) = self.aliases.get(&name) {
                    return self.class(target, depth + 1);
                }
                if let Some(fields) = self.structs.get(&name) {
                    if self.opaque.contains(&name) {
                        return Class::Foreign;
                    }
                    let all_plain = fields.iter().all(|f| {
                        matches!(
                            self.class(f, depth + 1),
                            Class::Plain | Class::Handle | Class::Char
                        )
                    });
                    return if all_plain {
                        Class::Plain
                    } else {
                        Class::Foreign
                    };
                }
                Class::Foreign
            }
            _ => Class::Foreign,
        }
    }

    fn is_opaque(&self, path: &syn::TypePath, depth: usize) -> bool {
        let Some(last) = path.path.segments.last() else {
            return false;
        };
        let name = last.ident.to_string();
        if self.opaque.contains(&name) {
            return true;
        }
        match self.aliases.get(&name) {
            Some(Type::Path(p)) if depth < 32 => self.is_opaque(p, depth + 1),
            _ => false,
        }
    }

    /// Classifies every parameter of `function`.
    ///
    /// # Errors
    /// The reason the function needs a hand-written handler.
    pub fn classify(&self, function: &CudaFunction) -> Result<Vec<ParamKind>, Unclassifiable> {
        if function.origin == Origin::Supplement {
            return Err(Unclassifiable(
                "declared in the supplement, not the header".into(),
            ));
        }
        let ret_ok = matches!(&function.ret, Type::Path(p)
            if p.path.segments.last().is_some_and(|s| s.ident == "CUresult"));
        if !ret_ok {
            return Err(Unclassifiable("does not return CUresult".into()));
        }
        let counted = function
            .params
            .iter()
            .map(|p| p.name.to_string())
            .find(|n| is_count_name(n));
        let mut kinds = Vec::with_capacity(function.params.len());
        for param in &function.params {
            let name = &param.name;
            let kind = match &param.ty {
                Type::Ptr(ptr) => {
                    if self.class(&param.ty, 0) == Class::Handle {
                        ParamKind::Value
                    } else {
                        let elem = (*ptr.elem).clone();
                        match self.class(&elem, 0) {
                            Class::Plain | Class::Handle => {}
                            other => {
                                return Err(Unclassifiable(format!(
                                    "`{name}` points to {}",
                                    describe(other)
                                )))
                            }
                        }
                        if let Some(count) = counted.as_ref().filter(|c| *name != **c) {
                            return Err(Unclassifiable(format!(
                                "`{name}` may be an array sized by `{count}`"
                            )));
                        }
                        if ptr.mutability.is_some() {
                            ParamKind::InOut(elem)
                        } else {
                            ParamKind::Input(elem)
                        }
                    }
                }
                ty => match self.class(ty, 0) {
                    Class::Plain | Class::Handle | Class::Char => ParamKind::Value,
                    other => {
                        return Err(Unclassifiable(format!(
                            "`{name}` is {} by value",
                            describe(other)
                        )))
                    }
                },
            };
            kinds.push(kind);
        }
        Ok(kinds)
    }
}

fn describe(class: Class) -> &'static str {
    match class {
        Class::Plain => "plain data",
        Class::Handle => "a handle",
        Class::Void => "untyped guest memory",
        Class::Char => "a string or character buffer",
        Class::Foreign => "guest memory, a callback, or a struct holding pointers",
    }
}

/// Whether a parameter name says it counts or sizes an array.
fn is_count_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "count"
        || lower == "n"
        || lower.starts_with("num")
        || lower.ends_with("count")
        || lower.ends_with("len")
        || lower.ends_with("length")
        || (lower.starts_with('n') && name.chars().nth(1).is_some_and(|c| c.is_ascii_uppercase()))
        || (lower.starts_with("nb") && name.chars().nth(2).is_some_and(|c| c.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TypeTable {
        let file: syn::File = syn::parse_str(
            r#"
            pub use self::cudaError_enum as CUresult;
            #[repr(transparent)] pub struct cudaError_enum(pub ::std::os::raw::c_uint);
            pub struct CUctx_st { _unused: [u8; 0] }
            pub type CUcontext = *mut CUctx_st;
            pub type CUdeviceptr_v2 = ::std::os::raw::c_ulonglong;
            pub type CUdeviceptr = CUdeviceptr_v2;
            pub struct CUuuid_st { pub bytes: [::std::os::raw::c_char; 16usize] }
            pub type CUuuid = CUuuid_st;
            pub struct Holder { pub p: *mut ::std::os::raw::c_void }
            pub type CUhostFn = Option<unsafe extern "C" fn(userData: *mut ::std::os::raw::c_void)>;
            "#,
        )
        .unwrap();
        TypeTable::from_items(&file.items)
    }

    fn function(sig: &str) -> CudaFunction {
        let item: syn::ForeignItemFn = syn::parse_str(sig).unwrap();
        CudaFunction::from_foreign(&item, Origin::Header).unwrap()
    }

    fn kinds(sig: &str) -> Result<Vec<String>, Unclassifiable> {
        table().classify(&function(sig)).map(|ks| {
            ks.iter()
                .map(|k| match k {
                    ParamKind::Value => "value".to_owned(),
                    ParamKind::InOut(t) => format!("inout {}", quote::quote!(#t)),
                    ParamKind::Input(t) => format!("input {}", quote::quote!(#t)),
                })
                .collect()
        })
    }

    #[test]
    fn plain_pointers_and_handles_are_classified() {
        assert_eq!(
            kinds("pub fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult;")
                .unwrap(),
            ["inout CUdeviceptr", "value"]
        );
        assert_eq!(
            kinds("pub fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult;").unwrap(),
            ["inout CUcontext"]
        );
        assert_eq!(
            kinds("pub fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult;").unwrap(),
            ["value"]
        );
        assert_eq!(
            kinds("pub fn cuX(u: *const CUuuid, d: CUdeviceptr) -> CUresult;").unwrap(),
            ["input CUuuid", "value"]
        );
    }

    #[test]
    fn guest_memory_and_arrays_need_handlers() {
        assert_eq!(
            kinds("pub fn cuOcc(numBlocks: *mut ::std::os::raw::c_int, f: CUcontext, blockSize: ::std::os::raw::c_int) -> CUresult;").unwrap(),
            ["inout :: std :: os :: raw :: c_int", "value", "value"]
        );
        for sig in [
            "pub fn cuMemcpyHtoD_v2(d: CUdeviceptr, src: *const ::std::os::raw::c_void, n: usize) -> CUresult;",
            "pub fn cuDeviceGetName(name: *mut ::std::os::raw::c_char, len: ::std::os::raw::c_int, dev: ::std::os::raw::c_int) -> CUresult;",
            "pub fn cuGraphGetNodes(g: CUcontext, nodes: *mut CUcontext, numNodes: *mut usize) -> CUresult;",
            "pub fn cuX(h: *mut Holder) -> CUresult;",
            "pub fn cuLaunchHostFunc(s: CUcontext, f: CUhostFn, d: *mut ::std::os::raw::c_void) -> CUresult;",
            "pub fn cuY(x: *mut *mut ::std::os::raw::c_void) -> CUresult;",
        ] {
            assert!(kinds(sig).is_err(), "{sig} was classified");
        }
    }

    #[test]
    fn count_names() {
        for yes in [
            "count",
            "numNodes",
            "numDependencies",
            "nParams",
            "len",
            "nameLength",
            "elementCount",
            "nbResources",
        ] {
            assert!(is_count_name(yes), "{yes}");
        }
        for no in ["bytesize", "node", "name", "flags", "dev", "newValue"] {
            assert!(!is_count_name(no), "{no}");
        }
    }
}
