//! vgpu-host: serves a region, runs one worker process per guest process, and runs each guest
//! call on the real driver.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod accounting;
pub mod cli;
pub mod dispatch;
pub mod driver;
pub mod driver_check;
pub mod hardening;
pub mod listener;
pub mod liveness;
pub mod logging;
pub mod reporting;
pub mod signals;
pub mod stream_link;
pub mod supervisor;
pub mod tcp_security;
pub mod worker;
pub mod worker_link;
