//! A hostile guest's contexts, arrays and texture resources (issue 11, attack class 3): a
//! `CUcontext` or `CUarray` is a pointer into the worker like a stream, so one the guest forges,
//! or destroyed, must never reach the driver. The gate answers a context it was not given with
//! `CUDA_ERROR_INVALID_CONTEXT` and any other handle with `CUDA_ERROR_INVALID_HANDLE`, whether
//! the handle is an argument (`cuCtxSetCurrent`, `cuCtxDestroy_v2`, `cuArrayDestroy`) or a field
//! of a struct (a 2D copy's array end, a texture's resource descriptor); the client's own
//! contexts keep working.
//!
//! The fake driver (`fake_driver/contexts.c`) accepts any context value and logs every call it
//! receives by name (`FAKE_CUDA_CALLS`), so each refusal here is the gate's.

mod support;

use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{tmp, FakeDriver, Host};

const INVALID_CONTEXT: u32 = 201;
const INVALID_HANDLE: u32 = 400;
const FORGED: u64 = 0x4141_4141_4141_4141;

/// How many times the driver saw `name`.
fn calls(log: &std::path::Path, name: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == name)
        .count()
}

fn primary_retain(guest: &mut RawGuest, dev: i32) -> (u32, u64) {
    let frame = request(
        shim_macros::cuda_call_id!(cuDevicePrimaryCtxRetain),
        |enc| {
            enc.put(1u8);
            enc.put(FORGED); // the guest's value of the out-parameter, never recorded
            enc.put(dev);
        },
    );
    let (rc, body) = guest.call_raw(&frame);
    (rc, Decoder::new(&body).get().unwrap_or(0))
}

fn context_device(guest: &mut RawGuest, ctx: u64) -> (u32, i32) {
    let frame = request(shim_macros::cuda_call_id!(cuCtxGetDevice_v2), |enc| {
        enc.put(1u8);
        enc.put(-1i32);
        enc.put(ctx);
    });
    let (rc, body) = guest.call_raw(&frame);
    (rc, Decoder::new(&body).get().unwrap_or(-1))
}

#[test]
fn contexts_the_client_was_not_given_never_reach_the_driver() {
    let log = tmp("hostile-contexts-calls.log");
    let _ = std::fs::remove_file(&log);
    let mut host = Host::on_region("hostile-contexts")
        .driver(FakeDriver::Contexts)
        .env("FAKE_CUDA_CALLS", &log)
        .start();
    let mut guest = RawGuest::connect(host.region());
    let set = shim_macros::cuda_call_id!(cuCtxSetCurrent);
    let destroy = shim_macros::cuda_call_id!(cuCtxDestroy_v2);

    // A forged context, and the primary context's value before the client retained it.
    for ctx in [FORGED, 0x1000] {
        assert_eq!(guest.call(set, &[ctx], None).0, INVALID_CONTEXT, "{ctx:#x}");
        assert_eq!(context_device(&mut guest, ctx).0, INVALID_CONTEXT);
        assert_eq!(guest.call(destroy, &[ctx], None).0, INVALID_CONTEXT);
    }
    assert_eq!(
        calls(&log, "cuCtxSetCurrent"),
        0,
        "a forged context reached the driver"
    );
    assert_eq!(calls(&log, "cuCtxGetDevice_v2"), 0);
    // NULL is the driver's to answer (the current context).
    assert_eq!(guest.call(set, &[0], None).0, 0);
    assert_eq!(calls(&log, "cuCtxSetCurrent"), 1);

    // The client's own primary context works, and the guest's out-value was not recorded.
    let (rc, primary) = primary_retain(&mut guest, 0);
    assert_eq!((rc, primary), (0, 0x1000));
    assert_eq!(guest.call(set, &[primary], None).0, 0);
    assert_eq!(context_device(&mut guest, primary), (0, 0));
    assert_eq!(guest.call(set, &[FORGED], None).0, INVALID_CONTEXT);
    assert_eq!(calls(&log, "cuCtxSetCurrent"), 2);
    // A released primary context is still the client's (the same value comes back on the next
    // retain, and the driver answers for it).
    let release = shim_macros::cuda_call_id!(cuDevicePrimaryCtxRelease_v2);
    let frame = request(release, |enc| enc.put(0i32));
    assert_eq!(guest.call_raw(&frame).0, 0);
    assert_eq!(guest.call(set, &[primary], None).0, 0);

    // Arrays: none was ever created, so every value is forged; the copy and the texture carry
    // theirs inside a struct.
    assert_eq!(
        guest
            .call(shim_macros::cuda_call_id!(cuArrayDestroy), &[FORGED], None)
            .0,
        INVALID_HANDLE
    );
    let (rc, dptr) = guest.mem_alloc(4096);
    assert_eq!(rc, 0);
    let mut copy: cuda_headers::CUDA_MEMCPY2D = unsafe { std::mem::zeroed() };
    copy.srcMemoryType = cuda_headers::CUmemorytype::CU_MEMORYTYPE_ARRAY;
    copy.srcArray = FORGED as usize as cuda_headers::CUarray;
    copy.dstMemoryType = cuda_headers::CUmemorytype::CU_MEMORYTYPE_DEVICE;
    copy.dstDevice = dptr;
    copy.dstPitch = 64;
    (copy.WidthInBytes, copy.Height) = (64, 4);
    let frame = request(shim_macros::cuda_call_id!(cuMemcpy2D_v2), |enc| {
        // SAFETY: a plain C struct, sent as the shim sends it.
        unsafe { enc.put_raw(&copy) };
        enc.put(0u64);
    });
    assert_eq!(
        guest.call_raw(&frame).0,
        INVALID_HANDLE,
        "2D copy from a forged array"
    );
    let mut desc: cuda_headers::CUDA_RESOURCE_DESC = unsafe { std::mem::zeroed() };
    desc.resType = cuda_headers::CUresourcetype::CU_RESOURCE_TYPE_ARRAY;
    desc.res.array.hArray = FORGED as usize as cuda_headers::CUarray;
    let frame = request(shim_macros::cuda_call_id!(cuSurfObjectCreate), |enc| {
        enc.put(1u8);
        enc.put(0u64);
        enc.put(1u8);
        // SAFETY: a plain C struct, sent as the generated forwarder sends it.
        unsafe { enc.put_raw(&desc) };
    });
    assert_eq!(
        guest.call_raw(&frame).0,
        INVALID_HANDLE,
        "surface of a forged array"
    );
    for name in ["cuArrayDestroy", "cuMemcpy2D_v2", "cuSurfObjectCreate"] {
        assert_eq!(calls(&log, name), 0, "{name} reached the driver");
    }

    // The client goes on: its context is still current and usable.
    assert_eq!(context_device(&mut guest, 0), (0, 0));
    assert!(host.alive());
    host.assert_no_panic();
}
