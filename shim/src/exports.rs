//! Every driver-API export, generated from the signature list by `shim_macros::cuda_functions!`
//! through the [`stub`](crate::stub) template.
#![allow(non_snake_case, clippy::missing_safety_doc, clippy::too_many_arguments)]

#[allow(unused_imports)]
use cuda_headers::supplement::*;
#[allow(unused_imports)]
use cuda_headers::*;

use crate::stub::stub;

shim_macros::cuda_functions!(stub, custom <= [cuGetErrorName, cuGetErrorString]);
