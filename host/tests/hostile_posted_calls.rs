//! A guest that posts a call the call table never posts (issue 11): a posted request gets no
//! response, so a call with outputs (an allocation's address, say) must never run posted. The
//! host refuses it without running it and reports `CUDA_ERROR_INVALID_VALUE` at the thread's
//! next call, as for any failed posted call; the client goes on.

mod support;

use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const INVALID_VALUE: u32 = 1;
const MIB: u64 = 1 << 20;

#[test]
fn a_posted_call_that_is_never_posted_is_refused_without_running() {
    let mut host = Host::on_region("hostile-posted")
        .driver(FakeDriver::PostedKernels)
        .args(["--client-memory-mib", "4"])
        .start();
    let mut guest = RawGuest::connect(host.region());
    // cuMemAlloc_v2 posted: had it run, it would hold 3 of the client's 4 MiB.
    let frame = request(shim_macros::cuda_call_id!(cuMemAlloc_v2), |enc| {
        enc.put(1u8);
        enc.put(0u64);
        enc.put(3 * MIB);
    });
    guest.post_raw(&frame);
    // The next call answers the refusal instead of running.
    let (rc, _) = guest.mem_alloc(3 * MIB);
    assert_eq!(rc, INVALID_VALUE, "the refused post is reported once");
    // Then the client goes on, and the posted allocation never ran: 3 MiB still fit.
    let (rc, dptr) = guest.mem_alloc(3 * MIB);
    assert_eq!(rc, 0, "the quota was not used by the refused post");
    assert_ne!(dptr, 0);
    assert!(host.alive(), "the host survives");
}
