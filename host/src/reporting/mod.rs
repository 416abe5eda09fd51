//! What the supervisor tells operators: who its clients are and what each holds and does
//! (`docs/host.md`, "Metrics and the control socket").
//!
//! The supervisor's loop keeps the [`Roster`] (its workers and their counters blocks, see
//! `accounting/`) up to date; each request to an endpoint builds one [`HostReport`] from it
//! ([`Reporter::report`]): the control socket (`--control PATH`) answers it as JSON, the
//! metrics endpoint (`--metrics ADDR`) renders it as Prometheus text. Nothing here runs on a
//! client's call path.
//!
//! [`HostReport`]: host_report::HostReport

mod control;
mod http;
mod prometheus;
mod report;
mod roster;

pub use control::{ControlGuard, ControlSocket};
pub use http::MetricsServer;
pub use prometheus::render as render_prometheus;
pub use report::Reporter;
pub use roster::{Listing, Member, Roster};

/// Exit status of the host when `--metrics` or `--control` cannot be bound.
pub const EXIT_ENDPOINT: i32 = 6;
