//! Per-client accounting: what each client holds and does, counted by its worker and read by
//! the supervisor (for `--metrics` and `--control`, `docs/host.md`, "Metrics").
//!
//! Each worker counts into one [`Counters`] block: relaxed atomics, no lock, no allocation per
//! call. The block lives in a sealed memfd that the supervisor created for that worker and
//! mapped read-only before starting it (`--stats-fd`), so the supervisor reads a worker's
//! counters at any time without asking it anything, and a worker that dies leaves nothing
//! behind but a mapping the supervisor drops when it reaps it:
//!
//! ```text
//! worker (one per client)                           supervisor
//!  serve_channel: calls, latency      ─┐
//!  copy halves:   bytes by path        ├─► Counters (memfd, RW) ══ same pages ══► CountersView (RO)
//!  ThreadSession: deferred errors      │                                           │ snapshot()
//!  main loop, every 100 ms: gauges ───┘                                           ▼
//!   (memory, contexts, modules, streams, events, threads, refusals)     report.rs → JSON / Prometheus
//! ```
//!
//! The supervisor also publishes the region clients' pids and memory for the workers, which
//! answer the guests' NVML process lists from it ([`DirectoryWriter`], `directory.rs`).
//!
//! Counters only grow; gauges are overwritten. Nothing is ordered by them: every access is
//! `Relaxed`, and a reader may see one counter of a call updated and the next not yet.

mod counters;
mod directory;
mod shared;

pub use counters::{Counters, Direction, Gauges, Path, Snapshot, COUNTERS_VERSION};
pub use directory::{DirectoryView, DirectoryWriter, MAX_ROWS};
pub use shared::{CountersHome, CountersView, SharedError};
