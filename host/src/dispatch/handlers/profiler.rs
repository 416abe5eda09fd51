//! Profiler start/stop. Guest half: `shim/src/handlers/profiler.rs`.

use std::sync::Arc;

use cuda_headers::*;
use protocol::{DecodeError, Decoder};

use super::respond;
use crate::dispatch::ClientContext;

/// `cuProfilerStart`/`cuProfilerStop`: nothing → result. A driver without them answers
/// success: there is then no profiler to control.
pub fn start_stop(
    name: &str,
    _: &Arc<ClientContext>,
    dec: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    dec.finish()?;
    let f = if name == "cuProfilerStart" {
        crate::driver::real::cuProfilerStart()
    } else {
        crate::driver::real::cuProfilerStop()
    };
    // SAFETY: the driver's own function, no arguments.
    let r = f.map_or(CUresult::CUDA_SUCCESS, |f| unsafe { f() });
    respond(out, r);
    Ok(())
}
