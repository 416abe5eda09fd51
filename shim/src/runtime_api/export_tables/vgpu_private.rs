//! vgpu's own table (`vgpu.special.v1\0` as the UUID's bytes): lets vgpu's other guest libraries
//! ask the host a question over the calling thread's channel instead of opening a connection
//! (and with it a second host worker) of their own. The NVML facade (crate `nvml`) uses it for
//! `special::NVML_FACTS`, `special::NVML_MEMORY` and `special::NVML_PROCESSES`.
//!
//! | slot | signature | what it does |
//! |---|---|---|
//! | 0 | size word | 16 |
//! | 1 | `(u32 call, const u8 *request, usize request_len, u8 *answer, usize answer_cap, usize *answer_len) -> CUresult` | sends `request` (the body after the request header) as special call `call`, one of [`ALLOWED`]; on success copies the answer's body into `answer` and its length into `*answer_len`. The host's result is returned as is; an answer longer than `answer_cap` gives `CUDA_ERROR_INVALID_VALUE` with `*answer_len` set to the length needed. |

use std::ffi::c_void;

use cuda_headers::{CUresult, CuError};
use protocol::special;

use super::{slot, trace_arg, ExportTable, Known};
use crate::forward::{bad_response, call_with};

/// The special calls the table forwards; anything else is `CUDA_ERROR_INVALID_VALUE`.
pub const ALLOWED: [protocol::CallId; 3] = [
    special::NVML_FACTS,
    special::NVML_MEMORY,
    special::NVML_PROCESSES,
];

/// The UUID's bytes.
pub const ID: [u8; 16] = *b"vgpu.special.v1\0";

/// The table.
pub static TABLE: ExportTable<2> =
    ExportTable([ExportTable::<2>::size_word(), special_call as *const c_void]);

/// Its registry entry.
pub const KNOWN: Known = Known {
    id: ID,
    name: "vgpu-private",
    table: || TABLE.address(),
};

/// Slot 1.
extern "system" fn special_call(
    call: u32,
    request: *const u8,
    request_len: usize,
    answer: *mut u8,
    answer_cap: usize,
    answer_len: *mut usize,
) -> CUresult {
    slot(
        "vgpu-private[1]",
        |out| {
            trace_arg(out, "call", &call);
            trace_arg(out, "request_len", &request_len);
            trace_arg(out, "answer_cap", &answer_cap);
        },
        || {
            if !ALLOWED.iter().any(|c| c.0 == call)
                || answer_len.is_null()
                || (request.is_null() && request_len > 0)
                || (answer.is_null() && answer_cap > 0)
            {
                return Err(CuError::INVALID_VALUE);
            }
            let body = if request_len == 0 {
                &[][..]
            } else {
                // SAFETY: the caller gives `request_len` readable bytes at `request` (contract).
                unsafe { std::slice::from_raw_parts(request, request_len) }
            };
            let reply = call_with(
                call,
                |enc| enc.put_raw_bytes(body),
                |dec| {
                    let n = dec.remaining();
                    let rest: Vec<u8> = (0..n)
                        .map(|_| dec.get::<u8>())
                        .collect::<Result<_, _>>()
                        .map_err(bad_response)?;
                    Ok(rest)
                },
            )?;
            // SAFETY: checked non-NULL; valid for one write (contract).
            unsafe { answer_len.write(reply.len()) };
            if reply.len() > answer_cap {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: `answer` holds `answer_cap >= reply.len()` writable bytes (contract).
            unsafe { std::ptr::copy_nonoverlapping(reply.as_ptr(), answer, reply.len()) };
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_calls_and_null_pointers_are_refused_before_any_host_call() {
        let mut len = 0usize;
        let mut buf = [0u8; 8];
        let invalid = CUresult::CUDA_ERROR_INVALID_VALUE;
        let hello = special::HELLO.0;
        assert_eq!(
            special_call(hello, std::ptr::null(), 0, buf.as_mut_ptr(), 8, &mut len),
            invalid
        );
        let memory = special::NVML_MEMORY.0;
        assert_eq!(
            special_call(
                memory,
                std::ptr::null(),
                0,
                buf.as_mut_ptr(),
                8,
                std::ptr::null_mut()
            ),
            invalid
        );
        assert_eq!(
            special_call(memory, std::ptr::null(), 4, buf.as_mut_ptr(), 8, &mut len),
            invalid
        );
        assert_eq!(
            special_call(
                memory,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                8,
                &mut len
            ),
            invalid
        );
    }
}
