//! Proc macros over the CUDA signature list (filled by issue 2).
