//! Host half of `special::NVML_PROCESSES`: the guest's processes that use the GPU and the
//! device memory each holds, for the NVML facade's `nvmlDeviceGetComputeRunningProcesses`.
//!
//! A region client is told every client of its region, from the process list the supervisor
//! publishes (`accounting/directory.rs`; the region is the tenant boundary), with its own row
//! from its live count; a TCP client (its worker has no list) only itself.

use std::sync::OnceLock;

use cuda_headers::CUresult;
use protocol::special::nvml::{ProcessMemory, Processes};
use protocol::{DecodeError, Decoder, ResponseHeader};

use crate::accounting::DirectoryView;
use crate::dispatch::ClientContext;

/// Who the client is among its tenant's processes.
#[derive(Debug)]
pub struct Tenant {
    /// The client's guest pid.
    pub pid: u32,
    /// The region's process list (region clients only).
    pub directory: Option<DirectoryView>,
}

/// Set once the worker knows its client.
pub type TenantCell = OnceLock<Tenant>;

/// The processes, ordered by pid: the list's rows, the client's own from `own_bytes`.
fn processes(tenant: Option<&Tenant>, own_bytes: u64) -> Vec<ProcessMemory> {
    let Some(tenant) = tenant else {
        return Vec::new();
    };
    let mut rows = tenant
        .directory
        .as_ref()
        .and_then(DirectoryView::read)
        .unwrap_or_default();
    rows.retain(|&(pid, _)| pid != tenant.pid);
    rows.push((tenant.pid, own_bytes));
    rows.sort_unstable();
    rows.into_iter()
        .map(|(pid, used_bytes)| ProcessMemory { pid, used_bytes })
        .collect()
}

/// No arguments → result, [`Processes`].
pub fn nvml_processes(
    client: &ClientContext,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    dec.finish()?;
    let answer = Processes {
        processes: processes(client.tenant(), client.memory_held()),
    };
    answer.encode(&mut ResponseHeader::start(out, CUresult::CUDA_SUCCESS.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_own_row_is_its_live_count() {
        assert!(processes(None, 5).is_empty());
        let alone = Tenant {
            pid: 42,
            directory: None,
        };
        assert_eq!(
            processes(Some(&alone), 5),
            [ProcessMemory {
                pid: 42,
                used_bytes: 5
            }]
        );
    }
}
