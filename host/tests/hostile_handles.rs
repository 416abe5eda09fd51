//! A hostile guest's handles (issue 11, attack class 3): the driver's handles are pointers into
//! the worker, so a guest that passes a stream, event or function it was never given, or one it
//! destroyed, would have the driver dereference whatever lies there. The host's gate
//! (`host/src/dispatch/gate.rs`) admits only the handles the driver gave this client and answers
//! anything else with `CUDA_ERROR_INVALID_HANDLE` before the driver sees it; the same client's
//! next calls still work.
//!
//! The fake driver accepts some values it never handed out (`cuStreamSynchronize` takes any
//! stream; `cuEventRecord` any event below its next handle; function 0xADD0 launches whether or
//! not it was looked up), so each refusal here is the gate's, not the driver's.

mod support;

use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const INVALID_HANDLE: u32 = 400;

fn start_host(tag: &str) -> Host {
    Host::on_region(tag)
        .driver(FakeDriver::PostedKernels)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

/// A generated call whose arguments are all `u64` values (handles, addresses).
fn call(guest: &mut RawGuest, id: u32, args: &[u64]) -> u32 {
    guest.call(id, args, None).0
}

/// A generated `cuXCreate(&handle, u32 flags)`: the out-pointer's presence flag and value, then
/// the flags; the handle the driver wrote.
fn create(guest: &mut RawGuest, id: u32) -> u64 {
    let frame = request(id, |enc| {
        enc.put(1u8);
        enc.put(0u64);
        enc.put(0u32);
    });
    let (rc, body) = guest.call_raw(&frame);
    assert_eq!(rc, 0, "create call {id}");
    Decoder::new(&body).get().expect("handle")
}

/// `cuLaunchKernel(func, 1×1×1, 1×1×1, 0 shared, stream)` of `add(p, v)`, as the shim encodes it.
fn launch_add(guest: &mut RawGuest, func: u64, stream: u64, p: u64, v: i32) -> u32 {
    let frame = request(shim_macros::cuda_call_id!(cuLaunchKernel), |enc| {
        enc.put(func);
        for d in [1u32, 1, 1, 1, 1, 1, 0] {
            enc.put(d);
        }
        enc.put(stream);
        enc.put(1u8); // kernelParams
        let mut packed = p.to_le_bytes().to_vec();
        packed.extend_from_slice(&v.to_le_bytes());
        enc.put_bytes(&packed);
        enc.put(2u32);
        for (offset, size) in [(0u32, 8u32), (8, 4)] {
            enc.put(offset);
            enc.put(size);
        }
    });
    guest.call_raw(&frame).0
}

#[test]
fn handles_the_client_was_not_given_never_reach_the_driver() {
    let host = start_host("hostile-handles");
    let mut guest = RawGuest::connect(host.region());
    let (rc, p) = guest.mem_alloc(64);
    assert_eq!(rc, 0, "cuMemAlloc_v2");

    let sync = shim_macros::cuda_call_id!(cuStreamSynchronize);
    let record = shim_macros::cuda_call_id!(cuEventRecord);
    // A forged stream, and the special streams, which are not handles.
    assert_eq!(call(&mut guest, sync, &[0xdead_0000]), INVALID_HANDLE);
    for special in [0, 1, 2] {
        assert_eq!(call(&mut guest, sync, &[special]), 0, "stream {special}");
    }
    // A function the driver knows but never gave this client.
    assert_eq!(launch_add(&mut guest, 0xADD0, 0, p, 1), INVALID_HANDLE);
    // An event used after it was destroyed (the driver would still take its value).
    let event = create(&mut guest, shim_macros::cuda_call_id!(cuEventCreate));
    assert_eq!(call(&mut guest, record, &[event, 0]), 0);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuEventDestroy_v2),
            &[event]
        ),
        0
    );
    assert_eq!(call(&mut guest, record, &[event, 0]), INVALID_HANDLE);
    // A stream passed as an event, and an event as a stream.
    let stream = create(&mut guest, shim_macros::cuda_call_id!(cuStreamCreate));
    assert_eq!(call(&mut guest, record, &[stream, 0]), INVALID_HANDLE);
    let event = create(&mut guest, shim_macros::cuda_call_id!(cuEventCreate));
    assert_eq!(call(&mut guest, sync, &[event]), INVALID_HANDLE);
    assert!(
        !host.driver_log().contains("cuLaunchKernel add"),
        "a refused launch reached the driver:\n{}",
        host.driver_log()
    );

    // The same client's own handles work: a looked-up function on its own stream.
    let add = guest.fake_function("ADD0");
    assert_eq!(launch_add(&mut guest, add, stream, p, 5), 0);
    assert_eq!(call(&mut guest, sync, &[stream]), 0);
    assert_eq!(call(&mut guest, record, &[event, stream]), 0);
    assert!(host.driver_log().contains("cuLaunchKernel add 5"));

    // Destroyed and unloaded handles are forgotten: the stream, and the module's functions.
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuStreamDestroy_v2),
            &[stream]
        ),
        0
    );
    assert_eq!(call(&mut guest, sync, &[stream]), INVALID_HANDLE);
    let frame = request(shim_macros::cuda_call_id!(cuModuleLoadData), |enc| {
        enc.put_bytes(b".version 8.0\n.target sm_90\n.address_size 64\n\0")
    });
    let (rc, body) = guest.call_raw(&frame);
    assert_eq!(rc, 0);
    let module: u64 = Decoder::new(&body).get().expect("module");
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuModuleUnload),
            &[module]
        ),
        0
    );
    assert_eq!(launch_add(&mut guest, add, 0, p, 7), INVALID_HANDLE);
    assert!(!host.driver_log().contains("cuLaunchKernel add 7"));
    // A module is not a function, nor a function a module.
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuModuleUnload),
            &[add]
        ),
        INVALID_HANDLE
    );
    // And the client is still served.
    let add = guest.fake_function("ADD0");
    assert_eq!(launch_add(&mut guest, add, 0, p, 9), 0);
    assert!(host.driver_log().contains("cuLaunchKernel add 9"));
}

/// `cuModuleEnumerateFunctions` (`u64 module, u32 n` → `n × u64`), as the shim encodes it.
fn enumerate(guest: &mut RawGuest, module: u64, n: u32) -> (u32, Vec<u64>) {
    let frame = request(
        shim_macros::cuda_call_id!(cuModuleEnumerateFunctions),
        |enc| {
            enc.put(module);
            enc.put(n);
        },
    );
    let (rc, body) = guest.call_raw(&frame);
    let mut dec = Decoder::new(&body);
    let handles = if rc == 0 {
        (0..n).map(|_| dec.get().expect("handle")).collect()
    } else {
        Vec::new()
    };
    (rc, handles)
}

#[test]
fn functions_enumerated_from_a_module_are_the_clients_and_a_forged_module_is_refused() {
    let host = start_host("enumerate-functions");
    let mut guest = RawGuest::connect(host.region());
    let (rc, p) = guest.mem_alloc(64);
    assert_eq!(rc, 0, "cuMemAlloc_v2");
    // Not looked up yet: the gate refuses the fake kernel.
    assert_eq!(launch_add(&mut guest, 0xADD0, 0, p, 3), INVALID_HANDLE);
    let frame = request(shim_macros::cuda_call_id!(cuModuleLoadData), |enc| {
        enc.put_bytes(b".version 8.0\n.target sm_90\n.address_size 64\n\0")
    });
    let (rc, body) = guest.call_raw(&frame);
    assert_eq!(rc, 0);
    let module: u64 = Decoder::new(&body).get().expect("module");
    // A module this client never loaded, and an absurd count, never reach the driver.
    assert_eq!(enumerate(&mut guest, 0x4d01, 1).0, INVALID_HANDLE);
    assert_eq!(
        enumerate(&mut guest, module, u32::MAX).0,
        1,
        "INVALID_VALUE"
    );
    assert!(!host.driver_log().contains("cuModuleEnumerateFunctions"));
    // The module's function comes back and may be launched.
    assert_eq!(enumerate(&mut guest, module, 1), (0, vec![0xADD0]));
    assert_eq!(launch_add(&mut guest, 0xADD0, 0, p, 4), 0);
    assert!(host.driver_log().contains("cuLaunchKernel add 4"));
}
