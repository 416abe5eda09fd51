//! A guest that allocates without bound (issue 11, attack class 5): with `--client-memory-mib`,
//! the device memory a client's allocations hold is bounded. An allocation past the quota gets
//! `CUDA_ERROR_OUT_OF_MEMORY` before the driver sees it, frees give the room back, the client
//! goes on, and `cuMemGetInfo` reports the quota as the card. `--client-contexts` bounds the
//! contexts it creates the same way.

mod support;

use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const OUT_OF_MEMORY: u32 = 2;
const MIB: u64 = 1 << 20;

fn alloc(guest: &mut RawGuest, size: u64) -> (u32, u64) {
    guest.mem_alloc(size)
}

/// `cuMemGetInfo_v2(&free, &total)`.
fn info(guest: &mut RawGuest) -> (u64, u64) {
    let frame = request(shim_macros::cuda_call_id!(cuMemGetInfo_v2), |enc| {
        enc.put(1u8);
        enc.put(0u64);
        enc.put(1u8);
        enc.put(0u64);
    });
    let (rc, body) = guest.call_raw(&frame);
    assert_eq!(rc, 0, "cuMemGetInfo_v2");
    let mut dec = Decoder::new(&body);
    (dec.get().expect("free"), dec.get().expect("total"))
}

#[test]
fn allocations_past_the_clients_quota_are_refused() {
    let host = Host::on_region("hostile-quota")
        .driver(FakeDriver::PostedKernels)
        .args(["--client-memory-mib", "3"])
        .start();
    let mut guest = RawGuest::connect(host.region());
    assert_eq!(info(&mut guest), (3 * MIB, 3 * MIB));
    let (rc, a) = alloc(&mut guest, 2 * MIB);
    assert_eq!(rc, 0);
    assert_eq!(info(&mut guest), (MIB, 3 * MIB));
    // Past the quota: refused, whatever the card has free.
    assert_eq!(alloc(&mut guest, 2 * MIB).0, OUT_OF_MEMORY);
    assert_eq!(alloc(&mut guest, u64::MAX).0, OUT_OF_MEMORY);
    // What fits still fits, and a free gives the room back.
    let (rc, b) = alloc(&mut guest, MIB);
    assert_eq!(rc, 0);
    assert_eq!(info(&mut guest), (0, 3 * MIB));
    let free = shim_macros::cuda_call_id!(cuMemFree_v2);
    assert_eq!(guest.call(free, &[a], None).0, 0);
    // A second free of the same address is the driver's error and frees nothing more.
    assert_ne!(guest.call(free, &[a], None).0, 0);
    assert_eq!(info(&mut guest), (2 * MIB, 3 * MIB));
    assert_eq!(alloc(&mut guest, 2 * MIB).0, 0);
    assert_eq!(guest.call(free, &[b], None).0, 0);
    host.assert_no_panic();
}

#[test]
fn without_a_quota_the_card_is_reported() {
    let host = Host::on_region("no-quota")
        .driver(FakeDriver::PostedKernels)
        .start();
    let mut guest = RawGuest::connect(host.region());
    assert_eq!(info(&mut guest), (70 << 30, 80 << 30));
    assert_eq!(alloc(&mut guest, 64 * MIB).0, 0);
}

/// `cuCtxCreate_v2(&ctx, 0, 0)` as the generated marshalling sends it.
fn create_context(guest: &mut RawGuest) -> (u32, u64) {
    let frame = request(shim_macros::cuda_call_id!(cuCtxCreate_v2), |enc| {
        enc.put(1u8);
        enc.put(0u64);
        enc.put(0u32);
        enc.put(0i32);
    });
    let (rc, body) = guest.call_raw(&frame);
    let ctx = if rc == 0 {
        Decoder::new(&body).get().expect("ctx")
    } else {
        0
    };
    (rc, ctx)
}

#[test]
fn contexts_past_the_clients_quota_are_refused() {
    let host = Host::on_region("hostile-ctx-quota")
        .driver(FakeDriver::PostedKernels)
        .args(["--client-contexts", "2"])
        .start();
    let mut guest = RawGuest::connect(host.region());
    let (rc, first) = create_context(&mut guest);
    assert_eq!(rc, 0);
    assert_eq!(create_context(&mut guest).0, 0);
    assert_eq!(create_context(&mut guest).0, OUT_OF_MEMORY);
    let destroy = shim_macros::cuda_call_id!(cuCtxDestroy_v2);
    assert_eq!(guest.call(destroy, &[first], None).0, 0);
    assert_eq!(
        create_context(&mut guest).0,
        0,
        "a destroyed context gives its room back"
    );
    assert_eq!(create_context(&mut guest).0, OUT_OF_MEMORY);
    host.assert_no_panic();
}
