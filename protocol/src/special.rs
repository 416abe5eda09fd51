//! Calls that are not driver-API functions.

use crate::frame::CallId;

/// First call on every channel: [`crate::handshake::Hello`] → [`crate::handshake::Welcome`].
pub const HELLO: CallId = CallId(CallId::SPECIAL_BASE + 1);
/// Kernel parameter layout of a function handle: `u64 handle` → `u32 count`, then
/// `count` × (`u32 offset`, `u32 size`). The host answers from `cuFuncGetParamInfo`, or
/// `cuKernelGetParamInfo` for a `CUkernel`.
pub const PARAM_LAYOUT: CallId = CallId(CallId::SPECIAL_BASE + 2);
/// Host callbacks: the guest's callback thread reports the callback it just ran
/// (`u64 id`, 0 for none) and waits for the next one (`u64 id`, `u64 fn`, `u64 data`).
pub const CALLBACK_NEXT: CallId = CallId(CallId::SPECIAL_BASE + 3);
/// Orderly goodbye: the guest thread is ending; the host thread may exit.
pub const GOODBYE: CallId = CallId(CallId::SPECIAL_BASE + 4);
/// The two per-unit byte maps of export table `1734dc26…` slot 4, for the thread's current
/// context: no arguments → `bytes first`, `bytes second` (each a `u32` length, then the bytes).
/// Numbered apart from the others so that concurrent additions do not collide.
pub const UNIT_MAPS: CallId = CallId(CallId::SPECIAL_BASE + 8);
