//! The vgpu wire protocol, shared by the guest shim and the host worker.
//!
//! A call travels as one request frame and comes back as one response frame, over any
//! `transport` channel. Both frames start with a small fixed header ([`frame`]); the
//! arguments are encoded with [`codec`], whose layout is fixed by the *generated*
//! marshalling code on both sides (shim-macros expands the same signature list for the
//! guest and for the host, so the two cannot drift). Calls that the signature list
//! cannot describe (the handshake, kernel-parameter layouts, host callbacks) use the
//! [`special`] call ids. [`shim_marker`] names the symbol by which the host recognises the shim.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod codec;
pub mod frame;
pub mod handshake;
pub mod jit;
pub mod shim_marker;
pub mod special;

pub use codec::{DecodeError, Decoder, Encoder, Pod};
pub use frame::{CallId, DeferredError, PostMark, RequestHeader, ResponseHeader};
