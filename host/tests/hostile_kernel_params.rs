//! A hostile guest's kernel parameters (issue 11, attack class 1): the host builds the driver's
//! parameter pointers from its own layout of the function, so a guest that sends fewer, shorter
//! or misplaced parameters than the function has is refused with `CUDA_ERROR_INVALID_VALUE`
//! before the driver reads anything, and the same client's next launch still works.
//!
//! The fake driver (`posted/fake_kernels.c`) has `add(int *p, int v)` at handle 0xADD0, laid
//! out (0, 8), (8, 4): it reads both parameters through the pointers it is given, so a launch
//! with one pointer would read past the host's array.

mod support;

use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const INVALID_VALUE: u32 = 1;
const INVALID_HANDLE: u32 = 400;
const FORM_NONE: u8 = 0;
const FORM_POINTERS: u8 = 1;
const FORM_EXTRA: u8 = 2;

fn start_host(tag: &str) -> Host {
    Host::on_region(tag)
        .driver(FakeDriver::PostedKernels)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

/// `cuLaunchKernel(func, 1×1×1, 1×1×1, 0 shared, stream 0)` with the given parameter form,
/// packed bytes and claimed `(offset, size)` list, as the shim encodes it.
fn launch(guest: &mut RawGuest, func: u64, form: u8, packed: &[u8], claimed: &[(u32, u32)]) -> u32 {
    let frame = request(shim_macros::cuda_call_id!(cuLaunchKernel), |enc| {
        enc.put(func);
        for d in [1u32, 1, 1, 1, 1, 1, 0] {
            enc.put(d);
        }
        enc.put(0u64);
        enc.put(form);
        enc.put_bytes(packed);
        enc.put(claimed.len() as u32);
        for &(offset, size) in claimed {
            enc.put(offset);
            enc.put(size);
        }
    });
    guest.call_raw(&frame).0
}

/// `add`'s parameters packed at its real layout: the device pointer, then the value.
fn add_params(p: u64, v: i32) -> Vec<u8> {
    let mut packed = p.to_le_bytes().to_vec();
    packed.extend_from_slice(&v.to_le_bytes());
    packed
}

#[test]
fn parameters_that_do_not_match_the_functions_layout_never_reach_the_driver() {
    let host = start_host("hostile-params");
    let mut guest = RawGuest::connect(host.region());
    let (rc, p) = guest.mem_alloc(64);
    assert_eq!(rc, 0, "cuMemAlloc_v2");
    let add = guest.fake_function("ADD0");
    let real = [(0, 8), (8, 4)];

    // One pointer for two parameters: the driver would read the second past the array.
    assert_eq!(
        launch(&mut guest, add, FORM_POINTERS, &p.to_le_bytes(), &[(0, 8)]),
        INVALID_VALUE
    );
    // Short entries: the driver reads 8 and 4 bytes whatever the guest says.
    assert_eq!(
        launch(&mut guest, add, FORM_POINTERS, &[0; 6], &[(0, 2), (2, 4)]),
        INVALID_VALUE
    );
    // The right count with misplaced offsets.
    assert_eq!(
        launch(
            &mut guest,
            add,
            FORM_POINTERS,
            &add_params(p, 5),
            &[(0, 8), (0, 4)]
        ),
        INVALID_VALUE
    );
    // The right list over a buffer too short for it.
    assert_eq!(
        launch(
            &mut guest,
            add,
            FORM_POINTERS,
            &add_params(p, 5)[..10],
            &real
        ),
        INVALID_VALUE
    );
    // An `extra` buffer shorter than the parameters.
    assert_eq!(
        launch(&mut guest, add, FORM_EXTRA, &[0; 8], &[]),
        INVALID_VALUE
    );
    // No parameters for a function that has some.
    assert_eq!(launch(&mut guest, add, FORM_NONE, &[], &[]), INVALID_VALUE);
    // A function this client was never given: the gate refuses it before any launch.
    assert_eq!(
        launch(
            &mut guest,
            0x4141_4141_4141,
            FORM_POINTERS,
            &add_params(p, 5),
            &real
        ),
        INVALID_HANDLE
    );
    assert!(
        !host.driver_log().contains("cuLaunchKernel add"),
        "a refused launch reached the driver:\n{}",
        host.driver_log()
    );

    // The same client's well-formed launch still runs, in both forms.
    assert_eq!(
        launch(&mut guest, add, FORM_POINTERS, &add_params(p, 5), &real),
        0
    );
    assert_eq!(
        launch(&mut guest, add, FORM_EXTRA, &add_params(p, 7), &[]),
        0
    );
    let log = host.driver_log();
    assert!(log.contains("cuLaunchKernel add 5 (launch 1)"), "{log}");
    assert!(log.contains("cuLaunchKernel add 7 (launch 2)"), "{log}");
}
