//! Every driver-API export, generated from the signature list and the call table by
//! `shim_macros::cuda_functions!` through the [`stub`](crate::stub) template.
#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

#[allow(unused_imports)]
use cuda_headers::supplement::*;
#[allow(unused_imports)]
use cuda_headers::*;

use crate::stub::stub;

// The custom set is the call table's guest halves (`shim-macros/src/calls.rs`): each export
// there calls `crate::<guest module>::<name>`.
shim_macros::cuda_functions!(stub, custom <= calls);
