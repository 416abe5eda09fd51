//! Managed memory (`cuMemAllocManaged`) end to end on the fake driver: a C program with the shim
//! preloaded, over the shared region (a bulk block mapped and registered at the guest's own
//! address) and over TCP (a mirror mapped at the host's device pointer). The fake's registered
//! and mapped pinned memory is what its memsets and copies reach, as a kernel would, and it has
//! no managed memory of its own: it refuses, and logs, every managed-memory call that reaches it.
//!
//! Covers: one pointer for both sides; a guest CPU write seen by a device-side copy, a device
//! write (memset) seen by the CPU after a synchronisation; copies to and from the pointer;
//! pointer attributes and the address range; prefetch, advice and stream attachment accepted on
//! the client's own managed memory and refused elsewhere, without reaching the driver; free of
//! both sides; the quota, the region's bulk area and the mirrors' cap as out-of-memory; and a
//! hostile raw guest.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::{Decoder, Encoder};
use support::wire::{request, RawGuest};
use support::{c_program, run_client, ClientOutput, FakeDriver, Host};

const INVALID_VALUE: u32 = 1;
const OUT_OF_MEMORY: u32 = 2;
const INVALID_DEVICE: u32 = 101;
const INVALID_HANDLE: u32 = 400;
const NOT_SUPPORTED: u32 = 801;

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
typedef unsigned long long dptr;
typedef struct { unsigned type; int id; } loc_t;
typedef int (*fn_t)();
static void *cuda;
static fn_t f(const char *name) {
    fn_t p = (fn_t)dlsym(cuda, name);
    if (!p) { printf("missing %s\n", name); exit(2); }
    return p;
}
enum { N = 4096 };
int main(int argc, char **argv) {
    cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("no libcuda: %s\n", dlerror()); return 2; }
    printf("init rc=%d\n", f("cuInit")(0u));
    if (argc > 1 && !strcmp(argv[1], "oom")) {
        dptr big = 0, small = 0;
        int a = f("cuMemAllocManaged")(&big, (size_t)(64 << 20), 1u);
        int b = f("cuMemAllocManaged")(&small, (size_t)N, 1u);
        int c = f("cuMemFree_v2")(small);
        printf("oom rc=%d,%d,%d\n", a, b, c);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "var")) {
        /* A __managed__ variable, as cudart reaches it at module registration. */
        static const char ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n";
        void *lib = 0;
        int l = f("cuLibraryLoadData")(&lib, ptx, NULL, NULL, 0u, NULL, NULL, 0u);
        dptr c = 0, p = 0, again = 0;
        size_t cn = 0, pn = 0, an = 0;
        int a = f("cuLibraryGetManaged")(&c, &cn, lib, "g_counter");
        int b = f("cuLibraryGetManaged")(&p, &pn, lib, "g_pair");
        int r = f("cuLibraryGetManaged")(&again, &an, lib, "g_counter");
        printf("var rc=%d,%d,%d,%d sizes=%d,%d same=%d\n", l, a, b, r, (int)cn, (int)pn,
               again == c && an == cn);
        int *counter = (int *)(size_t)c, *pair = (int *)(size_t)p;
        printf("var initial=%d,%d,%d\n", *counter, pair[0], pair[1]);
        /* A device write ("kernel": memset), seen by the CPU only after a synchronisation. */
        int w = f("cuMemsetD32_v2")(c, 41u, (size_t)1);
        int before = *counter;
        int s = f("cuCtxSynchronize")();
        printf("var device to cpu rc=%d,%d before sync=%d after=%d\n", w, s, before, *counter);
        /* CPU writes, seen by the device (a copy out of the variables) at the next request. */
        *counter = 100;
        pair[1] = 9;
        int out[3] = {0, 0, 0};
        int c1 = f("cuMemcpyDtoH_v2")(out, c, (size_t)4);
        int c2 = f("cuMemcpyDtoH_v2")(out + 1, p, (size_t)8);
        printf("var cpu to device rc=%d,%d seen=%d,%d,%d\n", c1, c2, out[0], out[1], out[2]);
        unsigned managed = 5;
        int fr = f("cuMemFree_v2")(c);
        int nf = f("cuLibraryGetManaged")(&again, &an, lib, "nope");
        int fl = f("cuLibraryGetManaged")(&again, &an, (void *)((size_t)lib + 1), "g_counter");
        printf("var refused free=%d missing=%d foreign=%d\n", fr, nf, fl);
        (void)managed;
        int u = f("cuLibraryUnload")(lib);
        int after = f("cuLibraryGetManaged")(&again, &an, lib, "g_counter");
        int sync = f("cuCtxSynchronize")();
        printf("var unload rc=%d after=%d sync=%d\n", u, after, sync);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "fork")) {
        dptr m = 0;
        int a = f("cuMemAllocManaged")(&m, (size_t)N, 1u);
        unsigned *h = (unsigned *)(size_t)m;
        h[0] = 1;
        printf("alloc rc=%d\n", a);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            int kept = h[0] == 1;
            h[0] = 2;
            unsigned managed = 5;
            int r = f("cuPointerGetAttribute")(&managed, 8, m);
            printf("child kept=%d managed rc=%d is managed=%d\n", kept, r, managed == 1);
            fflush(stdout);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        printf("parent sees its own=%d\n", h[0] == 1);
        int w = f("cuMemsetD32_v2")(m, 7u, (size_t)1);
        int s = f("cuCtxSynchronize")();
        printf("parent device write rc=%d,%d seen=%d\n", w, s, h[0] == 7);
        return 0;
    }
    dptr m = 0, none = 0;
    int bad0 = f("cuMemAllocManaged")(&none, (size_t)0, 1u);
    int bad1 = f("cuMemAllocManaged")(&none, (size_t)N, 0u);
    int bad2 = f("cuMemAllocManaged")(&none, (size_t)N, 3u);
    printf("refused rc=%d,%d,%d\n", bad0, bad1, bad2);
    int rc = f("cuMemAllocManaged")(&m, (size_t)N, 1u /* GLOBAL */);
    unsigned char *h = (unsigned char *)(size_t)m;
    int zero = 1;
    for (int i = 0; i < N; i++) if (h[i]) zero = 0;
    printf("alloc rc=%d nonzero=%d zeroed=%d\n", rc, m != 0, zero);

    /* The guest CPU writes; a device-side copy reads the same pointer. */
    for (int i = 0; i < N; i++) h[i] = (unsigned char)(i * 7 + 1);
    dptr d = 0;
    unsigned char out[N];
    int a = f("cuMemAlloc_v2")(&d, (size_t)N);
    int b = f("cuMemcpyDtoD_v2")(d, m, (size_t)N);
    int c = f("cuMemcpyDtoH_v2")(out, d, (size_t)N);
    printf("cpu to device rc=%d,%d,%d seen=%d\n", a, b, c, memcmp(out, h, N) == 0);

    /* The device writes (a "kernel": memset through the pointer); the CPU reads after a
     * synchronisation. */
    int w = f("cuMemsetD32_v2")(m, 0xABCD1234u, (size_t)(N / 4));
    int s = f("cuCtxSynchronize")();
    int seen = 1;
    for (int i = 0; i < N / 4; i++) if (((unsigned *)h)[i] != 0xABCD1234u) seen = 0;
    printf("device to cpu rc=%d,%d seen=%d\n", w, s, seen);

    /* Copies naming the pointer as a device address, both ways. */
    unsigned char src[64], back[64];
    for (int i = 0; i < 64; i++) src[i] = (unsigned char)(200 - i);
    int c1 = f("cuMemcpyHtoD_v2")(m + 64, src, (size_t)64);
    int c2 = f("cuMemcpyDtoH_v2")(back, m + 64, (size_t)64);
    printf("copies rc=%d,%d cpu sees=%d copy back=%d\n", c1, c2, memcmp(h + 64, src, 64) == 0,
           memcmp(back, src, 64) == 0);

    /* Pointer attributes and the range. */
    unsigned managed = 0, type = 0, mapped = 0;
    dptr dev = 0, host = 0, start = 0, size = 0;
    int r1 = f("cuPointerGetAttribute")(&managed, 8 /* IS_MANAGED */, m + 16);
    int r2 = f("cuPointerGetAttribute")(&type, 2 /* MEMORY_TYPE */, m + 16);
    int r3 = f("cuPointerGetAttribute")(&dev, 3 /* DEVICE_POINTER */, m + 16);
    int r4 = f("cuPointerGetAttribute")(&host, 4 /* HOST_POINTER */, m + 16);
    int r5 = f("cuPointerGetAttribute")(&start, 11 /* RANGE_START_ADDR */, m + 16);
    int r6 = f("cuPointerGetAttribute")(&size, 12 /* RANGE_SIZE */, m + 16);
    int r7 = f("cuPointerGetAttribute")(&mapped, 13 /* MAPPED */, m + 16);
    printf("attribute rc=%d,%d,%d,%d,%d,%d,%d managed=%u type=%u same=%d range=%d mapped=%u\n",
           r1, r2, r3, r4, r5, r6, r7, managed, type, dev == m + 16 && host == m + 16,
           start == m && size == N, mapped);
    {
        int attrs[4] = {8, 2, 3, 9 /* DEVICE_ORDINAL */};
        unsigned is_managed = 0, kind = 0; dptr at = 0; int ordinal = -1;
        void *data[4] = {&is_managed, &kind, &at, &ordinal};
        int r = f("cuPointerGetAttributes")(4u, attrs, data, m + 8);
        printf("attributes rc=%d managed=%u type=%u same=%d ordinal=%d\n", r, is_managed, kind,
               at == m + 8, ordinal);
    }
    dptr base = 0; size_t len = 0;
    int g = f("cuMemGetAddressRange_v2")(&base, &len, m + 100);
    printf("range rc=%d base=%d size=%d\n", g, base == m, len == N);

    /* Prefetch, advice and attachment: the client's own managed memory only. */
    int (*prefetch_v2)(dptr, size_t, loc_t, unsigned, void *) =
        (int (*)(dptr, size_t, loc_t, unsigned, void *))dlsym(cuda, "cuMemPrefetchAsync_v2");
    int (*advise_v2)(dptr, size_t, unsigned, loc_t) =
        (int (*)(dptr, size_t, unsigned, loc_t))dlsym(cuda, "cuMemAdvise_v2");
    loc_t gpu = {1, 0}, cpu = {2, 0}, nowhere = {1, 7};
    printf("prefetch rc=%d,%d,%d,%d\n",
           f("cuMemPrefetchAsync")(m, (size_t)N, 0, (void *)0),
           f("cuMemPrefetchAsync")(m + 128, (size_t)128, -1, (void *)0),
           prefetch_v2(m, (size_t)N, gpu, 0u, (void *)0),
           prefetch_v2(m, (size_t)N, cpu, 0u, (void *)0));
    printf("prefetch refused rc=%d,%d,%d,%d\n",
           f("cuMemPrefetchAsync")(d, (size_t)N, 0, (void *)0),
           f("cuMemPrefetchAsync")(m + N - 8, (size_t)16, 0, (void *)0),
           f("cuMemPrefetchAsync")(m, (size_t)N, 7, (void *)0),
           prefetch_v2(m, (size_t)N, nowhere, 0u, (void *)0));
    printf("advise rc=%d,%d,%d\n",
           f("cuMemAdvise")(m, (size_t)N, 1u /* SET_READ_MOSTLY */, 0),
           f("cuMemAdvise")(m, (size_t)N, 3u /* SET_PREFERRED_LOCATION */, -1),
           advise_v2(m, (size_t)64, 5u /* SET_ACCESSED_BY */, gpu));
    printf("advise refused rc=%d,%d,%d\n",
           f("cuMemAdvise")(d, (size_t)64, 1u, 0),
           f("cuMemAdvise")(m, (size_t)64, 99u, 0),
           f("cuMemAdvise")(m, (size_t)64, 5u, 9));
    printf("attach rc=%d,%d refused rc=%d\n",
           f("cuStreamAttachMemAsync")((void *)0, m, (size_t)0, 1u),
           f("cuStreamAttachMemAsync")((void *)0, m, (size_t)N, 2u),
           f("cuStreamAttachMemAsync")((void *)0, m + 8, (size_t)0, 1u));

    /* Host-memory calls: flags and device pointer answered as the driver does for managed
     * memory; it is not pinned memory to free. */
    unsigned flags = 0;
    dptr alias = 0;
    int hf = f("cuMemHostGetFlags")(&flags, (void *)(h + 8));
    int hd = f("cuMemHostGetDevicePointer_v2")(&alias, (void *)(h + 8), 0u);
    printf("pinned calls rc=%d,%d,%d flags=%u alias=%d\n", hf, hd,
           f("cuMemFreeHost")((void *)h), flags, alias == m + 8);

    int fr = f("cuMemFree_v2")(m);
    int fr2 = f("cuMemFree_v2")(m);
    int after = f("cuMemPrefetchAsync")(m, (size_t)N, 0, (void *)0);
    printf("free rc=%d again=%d prefetch after=%d\n", fr, fr2, after);
    dptr again = 0;
    int re = f("cuMemAllocManaged")(&again, (size_t)N, 2u /* HOST */);
    printf("realloc rc=%d\n", re);
    printf("done\n");
    return 0;
}
"#;

fn program() -> PathBuf {
    c_program("managed_client", PROGRAM, &["-ldl"])
}

fn expect(run: &ClientOutput, lines: &[&str]) {
    for line in lines {
        assert!(
            run.stdout.lines().any(|l| l == *line),
            "missing `{line}` in:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

/// What the program prints on either transport.
const BOTH: &[&str] = &[
    "init rc=0",
    "refused rc=1,1,1",
    "alloc rc=0 nonzero=1 zeroed=1",
    "cpu to device rc=0,0,0 seen=1",
    "device to cpu rc=0,0 seen=1",
    "copies rc=0,0 cpu sees=1 copy back=1",
    // Memory type 2: CU_MEMORYTYPE_DEVICE, as the driver answers for managed memory.
    "attribute rc=0,0,0,0,0,0,0 managed=1 type=2 same=1 range=1 mapped=1",
    "attributes rc=0 managed=1 type=2 same=1 ordinal=0",
    "range rc=0 base=1 size=1",
    "prefetch rc=0,0,0,0",
    "prefetch refused rc=1,1,101,101",
    "advise rc=0,0,0",
    "advise refused rc=1,1,101",
    "attach rc=0,0 refused rc=1",
    // DEVICEMAP: unverified, see `MANAGED_HOST_FLAGS` in shim/src/handlers/memory/host_alloc.rs.
    "pinned calls rc=0,1,1 flags=2 alias=0",
    "free rc=0 again=1 prefetch after=1",
    "realloc rc=0",
    "done",
];

/// The driver saw none of the managed-memory calls: they are answered by the host.
fn assert_driver_untouched(host: &Host) {
    let log = host.driver_log();
    assert!(!log.contains("reached the driver"), "{log}");
}

#[test]
fn managed_memory_over_the_region_is_one_pointer_for_cpu_and_gpu() {
    let host = Host::on_region("managed")
        .region_size(16 << 20)
        .log_driver_calls()
        .start();
    let run = run_client(&mut host.client(&program()));
    expect(&run, BOTH);
    let log = host.driver_log();
    // Two allocations of one 64 KiB bulk block each, registered at the guest's address.
    assert_eq!(
        log.matches("cuMemHostRegister_v2 flags=3 len=65536")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("cuMemHostUnregister len=65536").count(),
        1,
        "the freed one: {log}"
    );
    assert_driver_untouched(&host);
    host.assert_no_panic();
}

#[test]
fn managed_memory_over_tcp_is_mirrored_at_one_address() {
    let host = Host::without_region()
        .log_driver_calls()
        .args(["--listen", "127.0.0.1:0", "--tcp-grace-ms", "200"])
        .start();
    let run = run_client(&mut host.tcp_client(&program()));
    expect(&run, BOTH);
    let log = host.driver_log();
    assert_eq!(
        log.matches("cuMemHostAlloc flags=3 len=4096").count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("cuMemFreeHost len=4096").count(), 1, "{log}");
    assert_driver_untouched(&host);
    // The client is gone: its worker frees the allocation it left.
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.driver_log().matches("cuMemFreeHost len=4096").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the worker did not free a gone client's managed memory: {}",
            host.driver_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.assert_no_panic();
}

#[test]
fn managed_memory_is_bounded_by_the_quota_the_bulk_area_and_the_mirror_cap() {
    // The quota: 1 MiB.
    let host = Host::on_region("managed-quota")
        .region_size(128 << 20)
        .args(["--client-memory-mib", "1"])
        .start();
    let run = run_client(host.client(&program()).arg("oom"));
    expect(&run, &["oom rc=2,0,0"]);
    // The bulk area of a 16 MiB region.
    let host = Host::on_region("managed-bulk")
        .region_size(16 << 20)
        .start();
    let run = run_client(host.client(&program()).arg("oom"));
    expect(&run, &["oom rc=2,0,0"]);
    // The mirrors' cap over TCP: 64 MiB fit the default (256 MiB), not a cap of 1 MiB set by
    // VGPU_MANAGED_MIRROR_MIB.
    let host = Host::without_region()
        .args(["--listen", "127.0.0.1:0"])
        .start();
    let run = run_client(host.tcp_client(&program()).arg("oom"));
    expect(&run, &["oom rc=0,0,0"]);
    let run = run_client(
        host.tcp_client(&program())
            .arg("oom")
            .env("VGPU_MANAGED_MIRROR_MIB", "1"),
    );
    expect(&run, &["oom rc=2,0,0"]);
    assert!(
        run.stderr.contains("managed memory over TCP is mirrored")
            && run.stderr.contains("at most 1048576 bytes"),
        "the cap is logged: {}",
        run.stderr
    );
}

/// What the `var` mode prints on either transport.
const VARIABLE: &[&str] = &[
    "init rc=0",
    "var rc=0,0,0,0 sizes=4,8 same=1",
    "var initial=7,1,2",
    "var device to cpu rc=0,0 before sync=7 after=41",
    "var cpu to device rc=0,0 seen=100,1,9",
    // A variable is no allocation; an unknown name is the driver's NOT_FOUND; a library that is
    // not the client's never reaches the driver.
    "var refused free=1 missing=500 foreign=400",
    "var unload rc=0 after=400 sync=0",
];

#[test]
fn a_managed_variable_is_mirrored_at_the_drivers_address_over_the_region() {
    let host = Host::on_region("managed-var")
        .region_size(16 << 20)
        .driver(FakeDriver::Contexts)
        .log_driver_calls()
        .start();
    let run = run_client(host.client(&program()).arg("var"));
    expect(&run, VARIABLE);
    let log = host.driver_log();
    assert_eq!(
        log.matches("cuLibraryGetManaged len=").count(),
        3,
        "the foreign library never reached the driver: {log}"
    );
    host.assert_no_panic();
}

#[test]
fn a_managed_variable_is_mirrored_at_the_drivers_address_over_tcp() {
    let host = Host::without_region()
        .driver(FakeDriver::Contexts)
        .args(["--listen", "127.0.0.1:0"])
        .start();
    let run = run_client(host.tcp_client(&program()).arg("var"));
    expect(&run, VARIABLE);
    host.assert_no_panic();
}

#[test]
fn a_forked_child_keeps_a_private_copy_and_the_parent_its_managed_memory() {
    let host = Host::on_region("managed-fork")
        .region_size(16 << 20)
        .start();
    let run = run_client(host.client(&program()).arg("fork"));
    expect(
        &run,
        &[
            "alloc rc=0",
            // The child's worker never heard of the memory: plain memory there (the fake knows
            // no attribute 8 of it).
            "child kept=1 managed rc=1 is managed=0",
            "parent sees its own=1",
            "parent device write rc=0,0 seen=1",
        ],
    );
    host.assert_no_panic();
}

/// `cuMemAllocManaged` over the raw wire: `u64 len, u32 flags, u64 guest_bulk_base`.
fn alloc(guest: &mut RawGuest, len: u64, flags: u32, base: u64) -> (u32, u64, u64) {
    let frame = request(shim_macros::cuda_call_id!(cuMemAllocManaged), |enc| {
        enc.put(len);
        enc.put(flags);
        enc.put(base);
    });
    let (rc, body) = guest.call_raw(&frame);
    if rc != 0 {
        return (rc, 0, 0);
    }
    let mut dec = Decoder::new(&body);
    let (offset, _span, ptr): (u64, u64, u64) =
        (dec.get().unwrap(), dec.get().unwrap(), dec.get().unwrap());
    (rc, offset, ptr)
}

fn call(guest: &mut RawGuest, id: u32, args: impl FnOnce(&mut Encoder<'_>)) -> u32 {
    guest.call_raw(&request(id, args)).0
}

fn prefetch(guest: &mut RawGuest, ptr: u64, count: u64, device: i32, stream: u64) -> u32 {
    call(
        guest,
        shim_macros::cuda_call_id!(cuMemPrefetchAsync),
        |enc| {
            enc.put(ptr);
            enc.put(count);
            enc.put(device);
            enc.put(stream);
        },
    )
}

fn advise(guest: &mut RawGuest, ptr: u64, count: u64, advice: u32, device: i32) -> u32 {
    call(guest, shim_macros::cuda_call_id!(cuMemAdvise), |enc| {
        enc.put(ptr);
        enc.put(count);
        enc.put(advice);
        enc.put(device);
    })
}

#[test]
fn a_hostile_guest_gets_errors_for_memory_that_is_not_its_managed_memory() {
    let host = Host::on_region("managed-hostile")
        .region_size(16 << 20)
        .log_driver_calls()
        .start();
    let mut guest = RawGuest::connect(host.region());
    // An address free in the worker, page aligned: where the host maps the block's view.
    let base = 0x5a00_0000_0000;
    assert_eq!(
        alloc(&mut guest, 4096, 1, 0).0,
        INVALID_VALUE,
        "no bulk base"
    );
    assert_eq!(alloc(&mut guest, 0, 1, base).0, INVALID_VALUE, "zero bytes");
    assert_eq!(alloc(&mut guest, 4096, 4, base).0, INVALID_VALUE, "SINGLE");
    assert_eq!(alloc(&mut guest, 1 << 40, 1, base).0, OUT_OF_MEMORY);
    assert_eq!(
        alloc(&mut guest, 4096, 1, base + 0x123).0,
        NOT_SUPPORTED,
        "no view at a misaligned address: device pointer and guest pointer would differ"
    );

    let (rc, offset, ptr) = alloc(&mut guest, 4096, 1, base);
    assert_eq!(rc, 0);
    assert_eq!(ptr, base + offset, "the pointer is the guest's own address");
    let (rc, device) = guest.mem_alloc(4096);
    assert_eq!(rc, 0);
    let (_, pinned) = guest.call_tail(
        shim_macros::cuda_call_id!(cuMemHostAlloc),
        &[4096],
        Some(2),
        &[0],
    );
    let mut dec = Decoder::new(&pinned);
    let (pinned_offset, _, alias): (u64, u64, u64) =
        (dec.get().unwrap(), dec.get().unwrap(), dec.get().unwrap());

    assert_eq!(prefetch(&mut guest, ptr, 4096, 0, 0), 0);
    assert_eq!(
        prefetch(&mut guest, ptr, 0, 0, 0),
        INVALID_VALUE,
        "zero bytes"
    );
    assert_eq!(prefetch(&mut guest, ptr + 4000, 96, 0, 0), 0);
    assert_eq!(
        prefetch(&mut guest, ptr + 4000, 200, 0, 0),
        INVALID_VALUE,
        "inside the 64 KiB block, past the 4 KiB asked for"
    );
    assert_eq!(
        prefetch(&mut guest, ptr, 1 << 20, 0, 0),
        INVALID_VALUE,
        "past the block"
    );
    assert_eq!(prefetch(&mut guest, u64::MAX - 8, 16, 0, 0), INVALID_VALUE);
    assert_eq!(
        prefetch(&mut guest, device, 64, 0, 0),
        INVALID_VALUE,
        "device memory"
    );
    assert_eq!(
        prefetch(&mut guest, alias, 64, 0, 0),
        INVALID_VALUE,
        "pinned memory"
    );
    assert_eq!(prefetch(&mut guest, ptr, 64, 3, 0), INVALID_DEVICE);
    assert_eq!(prefetch(&mut guest, ptr, 64, -2, 0), INVALID_DEVICE);
    assert_eq!(
        prefetch(&mut guest, ptr, 64, 0, 0xdead_0000),
        INVALID_HANDLE,
        "a stream the client was not given"
    );
    assert_eq!(advise(&mut guest, ptr, 64, 1, 0), 0);
    assert_eq!(
        advise(&mut guest, ptr, 64, 0, 0),
        INVALID_VALUE,
        "no such advice"
    );
    assert_eq!(advise(&mut guest, alias, 64, 1, 0), INVALID_VALUE);
    assert_eq!(advise(&mut guest, ptr, 64, 3, 42), INVALID_DEVICE);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuMemAdvise_v2),
            |enc| {
                enc.put(ptr);
                enc.put(64u64);
                enc.put(3u32);
                enc.put(9u32); // no such location type
                enc.put(0i32);
            }
        ),
        INVALID_VALUE,
        "advice with a bad location"
    );

    // Each kind of memory is freed only by its own call.
    let free_host = shim_macros::cuda_call_id!(cuMemFreeHost);
    let free = shim_macros::cuda_call_id!(cuMemFree_v2);
    assert_eq!(guest.call(free_host, &[offset], None).0, INVALID_VALUE);
    assert_ne!(guest.call(free, &[alias], None).0, 0, "pinned memory");
    assert_eq!(guest.call(free, &[ptr + 8], None).0, INVALID_VALUE);
    assert_eq!(guest.call(free, &[ptr], None).0, 0);
    assert_eq!(
        guest.call(free, &[ptr], None).0,
        INVALID_VALUE,
        "freed once"
    );
    assert_eq!(prefetch(&mut guest, ptr, 64, 0, 0), INVALID_VALUE, "gone");
    assert_eq!(guest.call(free_host, &[pinned_offset], None).0, 0);
    assert_eq!(guest.call(free, &[device], None).0, 0);
    assert!(!host.driver_log().contains("reached the driver"));
    host.assert_no_panic();
}

/// `cuLibraryGetManaged` over the raw wire: `u64 library, bytes name` → `u64 id, u64 dptr, u64
/// bytes`.
fn get_managed(guest: &mut RawGuest, library: u64, name: &[u8]) -> (u32, u64, u64, u64) {
    let (rc, body) = guest.call_raw(&request(
        shim_macros::cuda_call_id!(cuLibraryGetManaged),
        |enc| {
            enc.put(library);
            enc.put_bytes(name);
        },
    ));
    let mut dec = Decoder::new(&body);
    if rc != 0 {
        return (rc, 0, 0, 0);
    }
    (
        rc,
        dec.get().unwrap(),
        dec.get().unwrap(),
        dec.get().unwrap(),
    )
}

fn mirror_call(
    guest: &mut RawGuest,
    id: protocol::CallId,
    encode: impl FnOnce(&mut Encoder<'_>),
) -> u32 {
    guest.call_raw(&request(id.0, encode)).0
}

#[test]
fn a_hostile_guest_cannot_abuse_a_managed_variable() {
    use protocol::special::{self, mirror};
    let host = Host::on_region("managed-var-hostile")
        .region_size(16 << 20)
        .driver(FakeDriver::Contexts)
        .log_driver_calls()
        .start();
    let mut guest = RawGuest::connect(host.region());
    assert_eq!(
        get_managed(&mut guest, 0x4c00, b"g_counter").0,
        INVALID_HANDLE,
        "a library the client never loaded"
    );
    let (rc, body) = guest.call_raw(&request(
        shim_macros::cuda_call_id!(cuLibraryLoadData),
        |enc| {
            enc.put_bytes(b".version 8.0\n.target sm_90\n\0");
            enc.put(0u32);
            enc.put(0u32);
        },
    ));
    assert_eq!(rc, 0);
    let library: u64 = Decoder::new(&body).get().unwrap();
    let (rc, id, ptr, len) = get_managed(&mut guest, library, b"g_counter");
    assert_eq!((rc, len), (0, 4));
    assert_eq!(
        get_managed(&mut guest, library, b"g_counter").1,
        id,
        "asked again: the same mirror, nothing new minted"
    );
    let push = |guest: &mut RawGuest, offset: u64, data: &[u8]| {
        mirror_call(guest, special::MIRROR_PUSH, |enc| {
            mirror::Push {
                writes: vec![mirror::Write { id, offset, data }],
            }
            .encode(enc)
        })
    };
    assert_eq!(push(&mut guest, 0, &[9, 0, 0, 0]), 0, "its own variable");
    assert_eq!(
        push(&mut guest, 2, &[0; 4]),
        INVALID_VALUE,
        "past the variable's 4 bytes (into its neighbour)"
    );
    assert_eq!(
        mirror_call(&mut guest, special::MIRROR_FREE, |enc| {
            mirror::FreeRequest { id }.encode(enc)
        }),
        INVALID_VALUE,
        "a mirror free of the driver's variable"
    );
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuMemFree_v2),
            |enc| { enc.put(ptr) }
        ),
        INVALID_VALUE,
        "cuMemFree of the driver's variable"
    );
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuLibraryUnload),
            |enc| enc.put(library)
        ),
        0
    );
    assert_eq!(
        push(&mut guest, 0, &[1]),
        INVALID_VALUE,
        "the library is gone, and its variable with it"
    );
    assert_eq!(
        mirror_call(&mut guest, special::MIRROR_PULL, |enc| {
            mirror::PullRequest { ids: vec![id] }.encode(enc)
        }),
        INVALID_VALUE
    );
    let log = host.driver_log();
    assert_eq!(log.matches("cuLibraryGetManaged len=4").count(), 2, "{log}");
    assert!(!log.contains("cuMemFreeHost"), "{log}");
    host.assert_no_panic();
}
