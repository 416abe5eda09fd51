//! vgpuctl: deploys the vgpu CUDA shim into one systemd service, verifies it, and rolls it back.
//!
//! It turns the seed's SAFE_DEPLOYMENT_GUIDE into code: a drop-in with `LD_PRELOAD` for one
//! service (never `/etc/ld.so.preload`), an emergency recovery script written before the drop-in,
//! a state file for exact rollback, and checks read from `/proc`, systemd and the journal.
//! With `--root DIR` every path is resolved under a staged root and no service manager command
//! runs against the live system.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod checklist;
pub mod cli;
pub mod control_socket;
pub mod doctor;
pub mod dropin;
pub mod elf_check;
mod error;
pub mod fsops;
pub mod host_install;
pub mod host_probe;
pub mod install;
pub mod ld_so_preload;
pub mod paths;
pub mod procfs;
pub mod recover;
pub mod recovery_script;
pub mod run;
pub mod smi;
pub mod state;
pub mod status;
pub mod systemctl;
pub mod tls_init;
pub mod top;
mod top_screen;
pub mod trace_summary;
pub mod uninstall;
pub mod unit_file;
pub mod verify;
pub mod vm_xml;

pub use error::Error;
