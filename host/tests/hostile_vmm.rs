//! A hostile guest's VMM allocation handles (issue 11, attack classes 3 and 5). The header types
//! `CUmemGenericAllocationHandle` as an integer, but the driver reads it as a pointer into the
//! worker, so a forged or released handle passed to `cuMemMap`, `cuMemRelease` or
//! `cuMemGetAllocationPropertiesFromHandle` would have the driver dereference whatever lies
//! there. The host's gate counts the client's references to each handle (`cuMemCreate` and
//! `cuMemRetainAllocationHandle` add one, `cuMemRelease` takes one) and answers any other value
//! with `CUDA_ERROR_INVALID_HANDLE` before the driver sees it. The memory quota holds a VMM
//! allocation until its last reference is released and its last mapping unmapped, so releasing
//! mapped memory does not free room under the quota.
//!
//! The fake driver (`fake_driver/vmm.c`) answers a handle it does not know with
//! `CUDA_ERROR_INVALID_VALUE`, so a 400 here is the gate's refusal, not the driver's.

mod support;

use cuda_headers::CUmemAllocationProp;
use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const INVALID_HANDLE: u32 = 400;
const OUT_OF_MEMORY: u32 = 2;
const MIB: u64 = 1 << 20;

/// `cuMemCreate(&handle, size, &prop, 0)` as the shim sends it: the result and the handle.
fn create(guest: &mut RawGuest, size: u64) -> (u32, u64) {
    let prop = CUmemAllocationProp::default();
    let frame = request(shim_macros::cuda_call_id!(cuMemCreate), |enc| {
        enc.put(size);
        // SAFETY: a plain C struct, all zero.
        unsafe { enc.put_raw(&prop) };
        enc.put(0u64);
    });
    let (rc, body) = guest.call_raw(&frame);
    (rc, Decoder::new(&body).get().unwrap_or(0))
}

/// `cuMemRetainAllocationHandle(&handle, address)`: the result and the handle.
fn retain(guest: &mut RawGuest, address: u64) -> (u32, u64) {
    let frame = request(
        shim_macros::cuda_call_id!(cuMemRetainAllocationHandle),
        |enc| enc.put(address),
    );
    let (rc, body) = guest.call_raw(&frame);
    (rc, Decoder::new(&body).get().unwrap_or(0))
}

fn map(guest: &mut RawGuest, address: u64, size: u64, handle: u64) -> u32 {
    let id = shim_macros::cuda_call_id!(cuMemMap);
    guest.call(id, &[address, size, 0, handle, 0], None).0
}

fn unmap(guest: &mut RawGuest, address: u64, size: u64) -> u32 {
    let id = shim_macros::cuda_call_id!(cuMemUnmap);
    guest.call(id, &[address, size], None).0
}

fn release(guest: &mut RawGuest, handle: u64) -> u32 {
    let id = shim_macros::cuda_call_id!(cuMemRelease);
    guest.call(id, &[handle], None).0
}

fn properties(guest: &mut RawGuest, handle: u64) -> u32 {
    let frame = request(
        shim_macros::cuda_call_id!(cuMemGetAllocationPropertiesFromHandle),
        |enc| enc.put(handle),
    );
    guest.call_raw(&frame).0
}

fn start_host(tag: &str, args: &[&str]) -> Host {
    Host::on_region(tag)
        .driver(FakeDriver::Vmm)
        .args(args.iter().copied())
        .start()
}

#[test]
fn allocation_handles_the_client_does_not_hold_never_reach_the_driver() {
    let host = start_host("hostile-vmm", &[]);
    let mut guest = RawGuest::connect(host.region());
    let (rc, handle) = create(&mut guest, 2 * MIB);
    assert_eq!(rc, 0, "cuMemCreate");
    assert_ne!(handle, 0);

    // Forged: an address near the real handle, and a plain number.
    for forged in [handle + 0x40, 0x4141_4141_4141_4141] {
        assert_eq!(map(&mut guest, 0x7000_0000, MIB, forged), INVALID_HANDLE);
        assert_eq!(release(&mut guest, forged), INVALID_HANDLE);
        assert_eq!(properties(&mut guest, forged), INVALID_HANDLE);
    }

    // The client's own handle works; a second reference from a mapped address keeps it
    // valid after one release.
    assert_eq!(properties(&mut guest, handle), 0);
    assert_eq!(map(&mut guest, 0x7000_0000, MIB, handle), 0);
    let (rc, again) = retain(&mut guest, 0x7000_0000);
    assert_eq!(
        (rc, again),
        (0, handle),
        "the same handle, one more reference"
    );
    assert_eq!(release(&mut guest, handle), 0);
    assert_eq!(properties(&mut guest, handle), 0);
    assert_eq!(release(&mut guest, handle), 0);

    // Every reference released: the handle is gone for the client, though its mapping still
    // holds the memory in the driver.
    assert_eq!(properties(&mut guest, handle), INVALID_HANDLE);
    assert_eq!(release(&mut guest, handle), INVALID_HANDLE);
    assert_eq!(map(&mut guest, 0x7100_0000, MIB, handle), INVALID_HANDLE);
    // Retained again from the mapping, it is the client's again.
    assert_eq!(retain(&mut guest, 0x7000_0000), (0, handle));
    assert_eq!(properties(&mut guest, handle), 0);
    assert_eq!(release(&mut guest, handle), 0);
    assert_eq!(unmap(&mut guest, 0x7000_0000, MIB), 0);

    // The client goes on.
    assert_eq!(create(&mut guest, MIB).0, 0);
    host.assert_no_panic();
}

#[test]
fn mapped_vmm_memory_counts_against_the_quota_until_unmapped() {
    let host = start_host("hostile-vmm-quota", &["--client-memory-mib", "3"]);
    let mut guest = RawGuest::connect(host.region());
    let (rc, a) = create(&mut guest, 2 * MIB);
    assert_eq!(rc, 0);
    assert_eq!(map(&mut guest, 0x7000_0000, 2 * MIB, a), 0);
    // Releasing the handle of mapped memory frees nothing: the mapping keeps it.
    assert_eq!(release(&mut guest, a), 0);
    assert_eq!(create(&mut guest, 2 * MIB).0, OUT_OF_MEMORY);
    // Unmapping the last mapping gives it back.
    assert_eq!(unmap(&mut guest, 0x7000_0000, 2 * MIB), 0);
    let (rc, b) = create(&mut guest, 2 * MIB);
    assert_eq!(rc, 0, "the room came back with the unmap");
    // Unmapped memory goes back with its last reference.
    assert_eq!(create(&mut guest, 2 * MIB).0, OUT_OF_MEMORY);
    assert_eq!(release(&mut guest, b), 0);
    assert_eq!(create(&mut guest, 2 * MIB).0, 0);
    host.assert_no_panic();
}
