//! Atomics used by the ring and claim protocols: `std` normally, `loom` under `--cfg loom` so that the
//! orderings can be model-checked with exactly the code that runs on shared memory.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
