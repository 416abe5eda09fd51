//! DEVICEMAP host memory over TCP: the mirror (`shim/src/mirror.rs`,
//! `host/src/dispatch/handlers/mirror.rs`). A C program with the shim preloaded reaches the real
//! `vgpu-host` over TCP, on the fake driver, whose `cuMemHostAlloc` maps host pages that its
//! memsets and copies reach as a kernel would (the device pointer is their host address).
//!
//! Covers: alloc and device pointer over TCP; a guest write reaching a device-side read; a
//! device write reaching the guest after each synchronising call (stream, context and event
//! synchronisation, successful stream and event queries, a synchronous copy); pointer
//! attributes; small pinned memory without DEVICEMAP, mirrored too; free (the worker's pinned
//! memory goes back to the driver); the size cap; and a
//! hostile raw guest naming bad mirror ids, offsets and lengths, which gets CUDA errors while
//! the host keeps serving.

mod support;

use std::time::{Duration, Instant};

use protocol::special::{self, mirror};
use protocol::Decoder;
use support::wire::{request, RawGuest};
use support::{c_program, run_client, Host};

const INVALID_VALUE: u32 = 1;
const OUT_OF_MEMORY: u32 = 2;

/// One DEVICEMAP allocation of 64 bytes, used from the guest and the "device".
const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
typedef unsigned long long dptr;
typedef int (*fn_t)();
static void *cuda;
static fn_t f(const char *name) {
    fn_t p = (fn_t)dlsym(cuda, name);
    if (!p) { printf("missing %s\n", name); }
    return p;
}
static dptr scratch;
/* A device write into `dst`: a posted device-to-device copy from device memory (a memset of
 * `dst` itself would be done in the guest when `dst` is also its pinned address). */
static int device_fill(dptr dst, unsigned value, int words) {
    int rc = f("cuMemsetD32_v2")(scratch, value, (size_t)words);
    if (rc) return rc;
    return f("cuMemcpyDtoDAsync_v2")(dst, scratch, (size_t)words * 4, (void *)0);
}
static int filled(const unsigned *p, unsigned value, int n) {
    for (int i = 0; i < n; i++) if (p[i] != value) return 0;
    return 1;
}
int main(void) {
    cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("no libcuda: %s\n", dlerror()); return 2; }
    printf("init rc=%d\n", f("cuInit")(0));
    if (f("cuMemAlloc_v2")(&scratch, (size_t)64)) printf("no scratch\n");
    unsigned char *h = 0;
    int rc = f("cuMemHostAlloc")(&h, (size_t)64, 2u /* DEVICEMAP */);
    dptr dp = 0;
    int rc2 = f("cuMemHostGetDevicePointer_v2")(&dp, h, 0u);
    int zero = 1;
    for (int i = 0; i < 64; i++) if (h[i]) zero = 0;
    printf("alloc rc=%d devptr rc=%d nonzero=%d zeroed=%d\n", rc, rc2, dp != 0, zero);
    dptr at = 0;
    unsigned type = 0;
    int rc3 = f("cuPointerGetAttribute")(&at, 3 /* DEVICE_POINTER */, (dptr)h + 8);
    int rc4 = f("cuPointerGetAttribute")(&type, 2 /* MEMORY_TYPE */, (dptr)h);
    printf("attributes rc=%d,%d device=%d host=%d\n", rc3, rc4, at == dp + 8, type == 1);

    /* Guest write, then a device-side read (a copy from the device pointer). */
    dptr d = 0;
    unsigned char out[64];
    memset(h, 0x5a, 64);
    int a = f("cuMemAlloc_v2")(&d, (size_t)64);
    int b = f("cuMemcpyDtoD_v2")(d, dp, (size_t)64);
    int c = f("cuMemcpyDtoH_v2")(out, d, (size_t)64);
    int seen = 1;
    for (int i = 0; i < 64; i++) if (out[i] != 0x5a) seen = 0;
    printf("guest to device rc=%d,%d,%d seen=%d\n", a, b, c, seen);

    /* Device writes, then each synchronising call. */
    void *event = 0;
    f("cuEventCreate")(&event, 0u);
    const char *kinds[] = {"cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize",
                           "cuStreamQuery", "cuEventQuery", "cuMemcpyDtoH_v2"};
    for (unsigned k = 0; k < 6; k++) {
        unsigned value = 0x1000 + k;
        int w = device_fill(dp, value, 16);
        int s;
        if (k == 1) s = f("cuCtxSynchronize")();
        else if (k == 2 || k == 4) {
            f("cuEventRecord")(event, (void *)0);
            s = f(kinds[k])(event);
        } else if (k == 5) s = f("cuMemcpyDtoH_v2")(out, d, (size_t)4);
        else s = f(kinds[k])((void *)0);
        printf("device to guest after %s rc=%d,%d seen=%d\n", kinds[k], w, s,
               filled((const unsigned *)h, value, 16));
    }
    /* A guest write after a pull reaches the device again. */
    memset(h, 0x33, 4);
    f("cuMemcpyDtoD_v2")(d, dp, (size_t)4);
    f("cuMemcpyDtoH_v2")(out, d, (size_t)4);
    printf("second push seen=%d\n", out[0] == 0x33 && out[3] == 0x33);

    /* A device write is not seen before a synchronising call, not even after another call. */
    unsigned *w = (unsigned *)h;
    device_fill(dp, 0x2222u, 16);
    int early = filled(w, 0x2222, 16);
    dptr d2 = 0;
    int a2 = f("cuMemAlloc_v2")(&d2, (size_t)64);
    int early2 = filled(w, 0x2222, 16);
    int s2 = f("cuStreamSynchronize")((void *)0);
    printf("not pulled early=%d,%d rc=%d,%d then seen=%d\n", early, early2, a2, s2,
           filled(w, 0x2222, 16));

    /* Each side's bytes survive: the device writes words 4..7, the guest bytes 0 and 63, with
     * no call between; the push must not write back the guest's stale words 4..7. */
    device_fill(dp + 16, 0x4444u, 4);
    h[0] = 0x77;
    h[63] = 0x78;
    int s3 = f("cuCtxSynchronize")();
    f("cuMemcpyDtoD_v2")(d2, dp, (size_t)64);
    unsigned char dev[64];
    f("cuMemcpyDtoH_v2")(dev, d2, (size_t)64);
    int guest_ok = h[0] == 0x77 && h[1] == 0x22 && filled(w + 4, 0x4444, 4) && h[62] == 0 &&
                   h[63] == 0x78 && w[8] == 0x2222;
    printf("both sides kept rc=%d guest=%d device=%d\n", s3, guest_ok, memcmp(dev, h, 64) == 0);

    /* A synchronous copy into the buffer writes the guest's bytes; the pull after it keeps them
     * (the device did not change them), and the next call pushes them. */
    f("cuMemsetD8_v2")(d, (unsigned char)0x99, (size_t)64);
    int c2 = f("cuMemcpyDtoH_v2")(h + 32, d, (size_t)8);
    int kept = h[31] == 0 && h[32] == 0x99 && h[39] == 0x99 && h[40] == 0x22;
    f("cuMemcpyDtoD_v2")(d2, dp + 32, (size_t)8);
    f("cuMemcpyDtoH_v2")(dev, d2, (size_t)8);
    printf("copy into the buffer rc=%d kept=%d pushed=%d\n", c2, kept,
           dev[0] == 0x99 && dev[7] == 0x99);

    /* A synchronous host-to-device copy is a synchronising call too. */
    device_fill(dp, 0x5555u, 1);
    unsigned one = 1;
    int c3 = f("cuMemcpyHtoD_v2")(d2, &one, (size_t)4);
    printf("after cuMemcpyHtoD_v2 rc=%d seen=%d\n", c3, w[0] == 0x5555);

    /* Pinned host memory as the source of a device-to-host copy (unified addressing): the
     * worker's driver does not know guest memory, so the copy is host to host, after the
     * stream: a plain pinned buffer, and the mirror (holding the device's 0x5555 now). */
    unsigned char *pin = 0;
    int p1 = f("cuMemHostAlloc")(&pin, (size_t)8192, 0u); /* too large to be mirrored */
    memset(pin, 0x6b, 8192);
    unsigned char got[8] = {0};
    int p2 = f("cuMemcpyDtoHAsync_v2")(got, (dptr)pin + 8, (size_t)8, (void *)0);
    int p3 = f("cuStreamSynchronize")((void *)0);
    int pinned_ok = 1;
    for (int i = 0; i < 8; i++) if (got[i] != 0x6b) pinned_ok = 0;
    unsigned word = 0;
    int p4 = f("cuMemcpyDtoH_v2")(&word, (dptr)h, (size_t)4);
    int p5 = f("cuMemcpyDtoH_v2")(got, (dptr)pin + 8188, (size_t)8);
    printf("host sources rc=%d,%d,%d,%d pinned=%d mirror=%d past the end rc=%d\n", p1, p2, p3,
           p4, pinned_ok, word == 0x5555, p5);

    /* Small pinned memory without DEVICEMAP is mirrored too (natively every pinned allocation
     * is device-mapped): a device write reaches the guest after a synchronising call, and a
     * guest write (XLA's semaphore release) reaches the device. Large pinned memory is not. */
    unsigned *sem = 0;
    int i1 = f("cuMemHostAlloc")(&sem, (size_t)4, 1u /* PORTABLE */);
    dptr sem_d = 0;
    int i2 = f("cuMemHostGetDevicePointer_v2")(&sem_d, sem, 0u);
    int i3 = device_fill(sem_d, 0xabcdu, 1);
    int i4 = f("cuCtxSynchronize")();
    int seen_sem = *sem == 0xabcd;
    *sem = 0x1234;
    unsigned back = 0;
    int i5 = f("cuMemcpyDtoD_v2")(d2, sem_d, (size_t)4);
    int i6 = f("cuMemcpyDtoH_v2")(&back, d2, (size_t)4);
    printf("implicit rc=%d,%d,%d,%d,%d,%d device to guest=%d guest to device=%d\n", i1, i2, i3, i4,
           i5, i6, seen_sem, back == 0x1234);
    fprintf(stderr, "implicit mirror at the device pointer: %d\n", sem_d == (dptr)sem);
    dptr pin_d = 0;
    printf("large pinned devptr rc=%d\n", f("cuMemHostGetDevicePointer_v2")(&pin_d, pin, 0u));
    printf("implicit free rc=%d\n", f("cuMemFreeHost")(sem));
    f("cuMemFreeHost")(pin);

    int fr = f("cuMemFreeHost")(h);
    dptr gone = 0;
    int after = f("cuMemHostGetDevicePointer_v2")(&gone, h, 0u);
    printf("free rc=%d devptr after free rc=%d\n", fr, after);
    unsigned char *big = 0;
    int over = f("cuMemHostAlloc")(&big, (size_t)(2 << 20), 2u);
    unsigned char *plain = 0;
    int plain_rc = f("cuMemHostAlloc")(&plain, (size_t)(2 << 20), 0u);
    printf("over the cap rc=%d plain rc=%d\n", over, plain_rc);
    /* Left allocated: the worker frees it when the client is gone. */
    unsigned char *left = 0;
    printf("left rc=%d\n", f("cuMemHostAlloc")(&left, (size_t)128, 2u));
    printf("done\n");
    return 0;
}
"#;

#[test]
fn devicemap_memory_is_mirrored_over_tcp() {
    let host = Host::without_region()
        .log_driver_calls()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log",
            "debug",
            "--tcp-grace-ms",
            "200",
        ])
        .start();
    let program = c_program("mirror", PROGRAM, &["-ldl"]);
    let run = run_client(&mut host.tcp_client(&program));
    let out = run.stdout;
    for line in [
        "init rc=0",
        "alloc rc=0 devptr rc=0 nonzero=1 zeroed=1",
        "attributes rc=0,0 device=1 host=1",
        "guest to device rc=0,0,0 seen=1",
        "device to guest after cuStreamSynchronize rc=0,0 seen=1",
        "device to guest after cuCtxSynchronize rc=0,0 seen=1",
        "device to guest after cuEventSynchronize rc=0,0 seen=1",
        "device to guest after cuStreamQuery rc=0,0 seen=1",
        "device to guest after cuEventQuery rc=0,0 seen=1",
        "device to guest after cuMemcpyDtoH_v2 rc=0,0 seen=1",
        "second push seen=1",
        "not pulled early=0,0 rc=0,0 then seen=1",
        "both sides kept rc=0 guest=1 device=1",
        "copy into the buffer rc=0 kept=1 pushed=1",
        "after cuMemcpyHtoD_v2 rc=0 seen=1",
        // A copy reaching past the pinned buffer is not host to host: the driver refuses it.
        "host sources rc=0,0,0,0 pinned=1 mirror=1 past the end rc=1",
        "implicit rc=0,0,0,0,0,0 device to guest=1 guest to device=1",
        // 801: CUDA_ERROR_NOT_SUPPORTED, plain guest memory.
        "large pinned devptr rc=801",
        "implicit free rc=0",
        "free rc=0 devptr after free rc=1",
        // 801: CUDA_ERROR_NOT_SUPPORTED past the cap; plain pinned memory is not mirrored.
        "over the cap rc=801 plain rc=0",
        "left rc=0",
        "done",
    ] {
        assert!(
            out.contains(line),
            "missing {line:?} in:\n{out}{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("at most 1048576 bytes per process"),
        "the cap is logged: {}",
        run.stderr
    );
    let driver = host.driver_log();
    assert_eq!(
        driver.matches("cuMemHostAlloc flags=3 len=64").count(),
        1,
        "one mirror, mapped and portable: {driver}"
    );
    assert_eq!(
        driver.matches("cuMemFreeHost len=64").count(),
        1,
        "freed on the host: {driver}"
    );
    assert_eq!(
        (
            driver.matches("cuMemHostAlloc flags=3 len=4").count(),
            driver.matches("cuMemFreeHost len=4").count()
        ),
        (1, 1),
        "the implicit mirror, allocated and freed on the host: {driver}"
    );
    // The client is gone: its worker exits after the grace period and frees what it left.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.driver_log().contains("cuMemFreeHost len=128") {
        assert!(
            Instant::now() < deadline,
            "the worker did not free a gone client's mirror: {}",
            host.driver_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.assert_no_panic();
}

fn alloc(guest: &mut RawGuest, len: u64) -> (u32, u64) {
    let frame = request(special::MIRROR_ALLOC.0, |enc| {
        mirror::AllocRequest { len }.encode(enc)
    });
    let (rc, body) = guest.call_raw(&frame);
    if rc != 0 {
        return (rc, 0);
    }
    let allocated = mirror::Allocated::decode(&mut Decoder::new(&body)).expect("answer");
    assert_ne!(allocated.device_ptr, 0);
    (rc, allocated.id)
}

fn push(guest: &mut RawGuest, id: u64, offset: u64, data: &[u8]) -> u32 {
    let frame = request(special::MIRROR_PUSH.0, |enc| {
        mirror::Push {
            writes: vec![mirror::Write { id, offset, data }],
        }
        .encode(enc)
    });
    guest.call_raw(&frame).0
}

fn pull(guest: &mut RawGuest, ids: &[u64]) -> (u32, Vec<Vec<u8>>) {
    let frame = request(special::MIRROR_PULL.0, |enc| {
        mirror::PullRequest { ids: ids.to_vec() }.encode(enc)
    });
    let (rc, body) = guest.call_raw(&frame);
    if rc != 0 {
        return (rc, Vec::new());
    }
    let pulled = mirror::Pulled::decode(&mut Decoder::new(&body), ids.len()).expect("answer");
    (rc, pulled.contents.iter().map(|c| c.to_vec()).collect())
}

fn free(guest: &mut RawGuest, id: u64) -> u32 {
    let frame = request(special::MIRROR_FREE.0, |enc| {
        mirror::FreeRequest { id }.encode(enc)
    });
    guest.call_raw(&frame).0
}

#[test]
fn a_hostile_guest_cannot_reach_past_its_mirrors() {
    let host = Host::on_region("mirror-hostile").log_driver_calls().start();
    let mut guest = RawGuest::connect(host.region());

    assert_eq!(push(&mut guest, 1, 0, b"x"), INVALID_VALUE, "no mirror yet");
    assert_eq!(pull(&mut guest, &[1]).0, INVALID_VALUE);
    assert_eq!(free(&mut guest, 1), INVALID_VALUE);
    assert_eq!(alloc(&mut guest, 0).0, OUT_OF_MEMORY, "zero bytes");
    assert_eq!(
        alloc(&mut guest, mirror::MAX_CLIENT_BYTES + 1).0,
        OUT_OF_MEMORY
    );
    assert_eq!(alloc(&mut guest, u64::MAX).0, OUT_OF_MEMORY);

    let (rc, id) = alloc(&mut guest, 16);
    assert_eq!(rc, 0);
    assert_eq!(
        push(&mut guest, id, 10, &[7; 8]),
        INVALID_VALUE,
        "past the end"
    );
    assert_eq!(push(&mut guest, id, u64::MAX, &[7; 2]), INVALID_VALUE);
    assert_eq!(push(&mut guest, id + 1, 0, &[7; 1]), INVALID_VALUE);
    assert_eq!(pull(&mut guest, &[id, id + 1]).0, INVALID_VALUE);
    assert_eq!(
        alloc(&mut guest, mirror::MAX_CLIENT_BYTES - 15).0,
        OUT_OF_MEMORY,
        "the cap counts every mirror"
    );
    assert_eq!(pull(&mut guest, &[id]).1, vec![vec![0u8; 16]], "cleared");

    assert_eq!(push(&mut guest, id, 12, b"abcd"), 0);
    let (rc, contents) = pull(&mut guest, &[id, id]);
    assert_eq!(rc, 0);
    let mut want = vec![0u8; 16];
    want[12..].copy_from_slice(b"abcd");
    assert_eq!(contents, vec![want.clone(), want]);

    // Several runs in one push: only their bytes are written.
    let frame = request(special::MIRROR_PUSH.0, |enc| {
        mirror::Push {
            writes: vec![
                mirror::Write {
                    id,
                    offset: 1,
                    data: b"x",
                },
                mirror::Write {
                    id,
                    offset: 3,
                    data: b"yz",
                },
            ],
        }
        .encode(enc)
    });
    assert_eq!(guest.call_raw(&frame).0, 0);
    let (_, contents) = pull(&mut guest, &[id]);
    assert_eq!(&contents[0][..6], b"\0x\0yz\0");
    assert_eq!(
        &contents[0][12..],
        b"abcd",
        "bytes no write named keep their value"
    );

    // One bad write refuses the whole push: nothing is written.
    let frame = request(special::MIRROR_PUSH.0, |enc| {
        mirror::Push {
            writes: vec![
                mirror::Write {
                    id,
                    offset: 0,
                    data: b"Q",
                },
                mirror::Write {
                    id,
                    offset: 16,
                    data: b"R",
                },
            ],
        }
        .encode(enc)
    });
    assert_eq!(guest.call_raw(&frame).0, INVALID_VALUE);
    assert_eq!(
        pull(&mut guest, &[id]).1[0][0],
        0,
        "the first write was not applied"
    );

    assert_eq!(free(&mut guest, id), 0);
    assert_eq!(free(&mut guest, id), INVALID_VALUE, "freed once");
    assert_eq!(push(&mut guest, id, 0, b"a"), INVALID_VALUE, "gone");
    let (rc, again) = alloc(&mut guest, mirror::MAX_CLIENT_BYTES);
    assert_eq!(rc, 0, "the room came back");
    assert_ne!(again, id, "ids are not reused");
    let (rc, contents) = pull(&mut guest, &[again]);
    assert_eq!(
        (rc, contents[0].len() as u64),
        (0, mirror::MAX_CLIENT_BYTES)
    );
    assert_eq!(
        pull(&mut guest, &[again; mirror::MAX_ENTRIES]).0,
        INVALID_VALUE,
        "an answer past the cap (one mirror named again and again) is refused"
    );

    // A garbage count: a malformed frame, answered, and the host keeps serving.
    let frame = request(special::MIRROR_PUSH.0, |enc| enc.put(u32::MAX));
    assert_ne!(guest.call_raw(&frame).0, 0);
    assert_eq!(free(&mut guest, again), 0);
    let driver = host.driver_log();
    assert_eq!(driver.matches("cuMemHostAlloc").count(), 2, "{driver}");
    assert_eq!(driver.matches("cuMemFreeHost").count(), 2, "{driver}");
    host.assert_no_panic();
}
