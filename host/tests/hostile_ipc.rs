//! A hostile guest and CUDA IPC handles (issue 11: a guest never reaches another client's GPU
//! memory). The driver's handle names an allocation by ids anyone who saw one could copy or
//! guess, and any process of the machine may open it, so the host hands guests only handles
//! sealed under its own key (`host/src/dispatch/ipc_seal.rs`). A sealed handle opens in any
//! worker of the same host (a guest's processes share memory this way); the driver's own bytes,
//! an altered handle, or a handle of another host reach the driver as unrelated bytes, which it
//! refuses.
//!
//! The fake driver's handle is `FAKEIPC\0` and the address (`fake_driver/libcuda.c`), and it
//! logs what it is asked to open.

mod support;

use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const HANDLE: usize = 64;

fn start(tag: &str) -> Host {
    Host::on_region(tag)
        .driver(FakeDriver::Plain)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

fn get_handle(guest: &mut RawGuest, dptr: u64) -> (u32, [u8; HANDLE]) {
    let frame = request(shim_macros::cuda_call_id!(cuIpcGetMemHandle), |enc| {
        enc.put(1u8);
        // SAFETY: plain bytes, as the generated forwarder sends the out-parameter.
        unsafe { enc.put_raw(&[0x5au8; HANDLE]) };
        enc.put(dptr);
    });
    let (rc, body) = guest.call_raw(&frame);
    let mut handle = [0u8; HANDLE];
    if rc == 0 {
        handle.copy_from_slice(&body[..HANDLE]);
    }
    (rc, handle)
}

fn open(guest: &mut RawGuest, handle: &[u8; HANDLE]) -> (u32, u64) {
    let frame = request(shim_macros::cuda_call_id!(cuIpcOpenMemHandle_v2), |enc| {
        enc.put(1u8);
        enc.put(0u64);
        // SAFETY: plain bytes.
        unsafe { enc.put_raw(handle) };
        enc.put(1u32);
    });
    let (rc, body) = guest.call_raw(&frame);
    (rc, Decoder::new(&body).get().unwrap_or(0))
}

#[test]
fn guests_get_sealed_ipc_handles_that_open_only_on_their_host() {
    let host = start("hostile-ipc");
    let other_host = start("hostile-ipc-other");
    let mut owner = RawGuest::connect(host.region());
    let (rc, dptr) = owner.mem_alloc(4096);
    assert_eq!(rc, 0);
    let (rc, sealed) = get_handle(&mut owner, dptr);
    assert_eq!(rc, 0, "cuIpcGetMemHandle");
    // What the driver made, as a guest that learnt its format would write it.
    let mut driver_handle = [0u8; HANDLE];
    driver_handle[..8].copy_from_slice(b"FAKEIPC\0");
    driver_handle[8..16].copy_from_slice(&dptr.to_le_bytes());
    assert!(host
        .driver_log()
        .contains(&format!("cuIpcGetMemHandle {dptr}")));
    assert_ne!(
        sealed, driver_handle,
        "the driver's handle reached the guest"
    );
    assert!(
        !sealed.windows(8).any(|w| w == dptr.to_le_bytes()),
        "the sealed handle shows the address"
    );

    // Another process of the guest opens the handle it was given: the driver sees its own.
    let mut peer = RawGuest::connect(host.region());
    assert_eq!(open(&mut peer, &sealed), (0, dptr));
    let opened = format!("cuIpcOpenMemHandle_v2 opened {dptr}");
    assert_eq!(host.driver_log().matches(&opened).count(), 1);

    // The driver's own bytes, and the sealed handle with one bit changed: the driver gets
    // bytes it never made.
    let mut altered = sealed;
    altered[40] ^= 0x10;
    for forged in [driver_handle, altered] {
        assert_eq!(open(&mut peer, &forged).0, 1, "a forged handle opened");
    }
    assert_eq!(host.driver_log().matches(&opened).count(), 1);
    assert_eq!(
        host.driver_log()
            .matches("refused a handle it never made")
            .count(),
        2
    );

    // Another host's key does not unseal it.
    let mut stranger = RawGuest::connect(other_host.region());
    assert_eq!(open(&mut stranger, &sealed).0, 1);
    assert!(!other_host.driver_log().contains("opened"));

    // The owner's next calls still work.
    assert_eq!(
        get_handle(&mut owner, dptr),
        (0, sealed),
        "sealing is stable"
    );
    host.assert_no_panic();
    other_host.assert_no_panic();
}
