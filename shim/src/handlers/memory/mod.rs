//! Copies that touch guest memory, pinned host memory, pointer attributes. Pinned memory is a
//! zero-copy block in the shared region when the host could place one (`zero_copy.rs`): copies
//! and memsets with such an end run on the host through the block's device alias. Otherwise it
//! is plain guest memory recorded here. Host halves: `host/src/dispatch/handlers/memory.rs`,
//! which documents each wire format.
//!
//! Split by concern: [`linear`] (host↔device), [`unified`] (`cuMemcpy`), [`pitched`] (2D, 3D),
//! [`attributes`] (pointer attributes of pinned memory), [`host_alloc`] (pinned allocations). The
//! registry of pinned guest memory is here.
#![allow(non_snake_case)]

pub(crate) mod attributes;
pub(crate) mod host_alloc;
pub(crate) mod linear;
pub(crate) mod pitched;
pub(crate) mod unified;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cuda_headers::*;
use protocol::Decoder;

use super::staged;
use super::zero_copy::{self, NotPlaced, Resolved};
use crate::forward::{bad_response, call_with};
use crate::log::{log, Level};

/// Host allocations made by `cuMemAllocHost`/`cuMemHostAlloc`: address → (length, flags).
static PINNED: Mutex<BTreeMap<usize, (usize, u32)>> = Mutex::new(BTreeMap::new());

fn pinned() -> std::sync::MutexGuard<'static, BTreeMap<usize, (usize, u32)>> {
    PINNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks, in the flags, ranges registered with `cuMemHostRegister` (`host_register.rs`) rather
/// than allocated here.
pub(crate) const REGISTERED: u32 = 1 << 31;

/// Records a registered range; `false` if it overlaps one already known (plain or zero-copy).
pub(crate) fn register_pinned(base: usize, len: usize, flags: u32) -> bool {
    if zero_copy::overlaps(base, len) {
        return false;
    }
    let mut map = pinned();
    let end = base.saturating_add(len);
    let overlaps_before = map
        .range(..=base)
        .next_back()
        .is_some_and(|(&b, &(l, _))| b + l.max(1) > base);
    let overlaps_after = map.range(base..end).next().is_some();
    if overlaps_before || overlaps_after {
        return false;
    }
    map.insert(base, (len, flags | REGISTERED));
    true
}

/// Forgets a registered range starting at `base`; `false` if there is none.
pub(crate) fn unregister_pinned(base: usize) -> bool {
    let mut map = pinned();
    match map.get(&base) {
        Some(&(_, flags)) if flags & REGISTERED != 0 => map.remove(&base).is_some(),
        _ => false,
    }
}

/// A pinned allocation (or registered range) of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pinned {
    /// First byte.
    pub base: usize,
    /// Length the application gave.
    pub len: usize,
    /// Its flags (`REGISTERED` marks `cuMemHostRegister` ranges).
    pub flags: u32,
    /// The zero-copy block, when the memory lives in the shared region.
    pub zero_copy: Option<zero_copy::Block>,
}

/// The pinned allocation containing guest address `addr`, if any.
pub(crate) fn pinned_containing(addr: usize) -> Option<Pinned> {
    if let Some(block) = zero_copy::containing(addr) {
        return Some(Pinned {
            base: block.guest,
            len: block.len,
            flags: block.flags,
            zero_copy: Some(block),
        });
    }
    let map = pinned();
    let (&base, &(len, flags)) = map.range(..=addr).next_back()?;
    (addr < base + len.max(1)).then_some(Pinned {
        base,
        len,
        flags,
        zero_copy: None,
    })
}
