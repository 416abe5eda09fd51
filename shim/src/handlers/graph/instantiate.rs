//! Instantiation (with the error node and log) and the DOT dump.

#![allow(non_snake_case)]

use super::*;

fn instantiate(
    id: u32,
    exec: *mut CUgraphExec,
    graph: CUgraph,
    error_node: *mut CUgraphNode,
    log_buffer: *mut c_char,
    size: usize,
) -> CuResult {
    if exec.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let size = if log_buffer.is_null() { 0 } else { size };
    call_with(
        id,
        |enc| {
            enc.put(graph as u64);
            enc.put(size as u64);
            enc.put_flag(!error_node.is_null());
        },
        |dec| {
            let e: u64 = dec.get().map_err(bad_response)?;
            let node: u64 = dec.get().map_err(bad_response)?;
            let log = dec.get_bytes().map_err(bad_response)?;
            write(exec, e as usize as CUgraphExec);
            write(error_node, node as usize as CUgraphNode);
            // SAFETY: the caller's buffer holds `size` bytes and the host sends at most that.
            unsafe { write_all(log_buffer.cast::<u8>(), &log[..log.len().min(size)]) };
            Ok(())
        },
    )
}

/// Instantiates a graph; on failure the error node and the log come back too.
///
/// # Safety
/// `logBuffer` is NULL or holds `bufferSize` bytes; other out-pointers are valid or NULL.
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphInstantiate(
    phGraphExec: *mut CUgraphExec,
    hGraph: CUgraph,
    phErrorNode: *mut CUgraphNode,
    logBuffer: *mut c_char,
    bufferSize: usize,
) -> CuResult {
    instantiate(
        shim_macros::cuda_call_id!(cuGraphInstantiate),
        phGraphExec,
        hGraph,
        phErrorNode,
        logBuffer,
        bufferSize,
    )
}

/// As [`cuGraphInstantiate`].
///
/// # Safety
/// As [`cuGraphInstantiate`].
///
/// # Errors
/// The host's result.
pub unsafe fn cuGraphInstantiate_v2(
    phGraphExec: *mut CUgraphExec,
    hGraph: CUgraph,
    phErrorNode: *mut CUgraphNode,
    logBuffer: *mut c_char,
    bufferSize: usize,
) -> CuResult {
    instantiate(
        shim_macros::cuda_call_id!(cuGraphInstantiate_v2),
        phGraphExec,
        hGraph,
        phErrorNode,
        logBuffer,
        bufferSize,
    )
}

/// Writes the graph as DOT to a guest path: the host renders the text, the guest writes it.
///
/// # Safety
/// `path` is a NUL-terminated string.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a NULL path or one that cannot be written (one log line);
/// the host's result.
pub unsafe fn cuGraphDebugDotPrint(hGraph: CUgraph, path: *const c_char, flags: u32) -> CuResult {
    if path.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: per the contract.
    let path = unsafe { CStr::from_ptr(path) }
        .to_string_lossy()
        .into_owned();
    let text = call_with(
        shim_macros::cuda_call_id!(cuGraphDebugDotPrint),
        |enc| {
            enc.put(hGraph as u64);
            enc.put(flags);
        },
        |dec| Ok(dec.get_bytes().map_err(bad_response)?.to_vec()),
    )?;
    std::fs::write(&path, text).map_err(|e| {
        log!(
            Level::Warn,
            "cuGraphDebugDotPrint: cannot write {path}: {e}"
        );
        CuError::INVALID_VALUE
    })
}
