//! Zero-copy pinned memory end to end on this machine: a C program with the shim preloaded
//! allocates pinned memory through the real `vgpu-host` serving the fake driver
//! (tests/fake_driver/libcuda.c, whose registered ranges have device pointer = host address and
//! whose copies are `memmove`), and a hostile guest speaking the wire protocol directly is
//! refused every block and address that is not its own.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::Decoder;
use support::wire::RawGuest;
use support::{c_program, run_client, Host};

/// A host on a fresh 16 MiB region (8 channels), its fake driver logging its calls.
fn start_host(tag: &str) -> Host {
    Host::on_region(tag)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

/// Free bulk blocks of `host`'s region, waiting up to 3 s for them to reach `want`.
fn free_blocks_reach(host: &Host, want: usize) -> usize {
    let region = transport::Region::open(host.region()).expect("open region");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let free = region.bulk_blocks_owned_by(0);
        if free == want || Instant::now() > deadline {
            return free;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef unsigned long long dptr;
#define FN(ret, name, args) typedef ret (*name##_t) args; static name##_t name;
FN(int, cuInit, (unsigned))
FN(int, cuMemHostAlloc, (void **, size_t, unsigned))
FN(int, cuMemAllocHost_v2, (void **, size_t))
FN(int, cuMemFreeHost, (void *))
FN(int, cuMemHostGetFlags, (unsigned *, void *))
FN(int, cuMemHostGetDevicePointer_v2, (dptr *, void *, unsigned))
FN(int, cuMemAlloc_v2, (dptr *, size_t))
FN(int, cuMemcpyHtoDAsync_v2, (dptr, const void *, size_t, void *))
FN(int, cuMemcpyDtoHAsync_v2, (void *, dptr, size_t, void *))
FN(int, cuMemcpy, (dptr, dptr, size_t))
FN(int, cuStreamSynchronize, (void *))
FN(int, cuPointerGetAttributes, (unsigned, int *, void **, dptr))
FN(int, cuMemsetD8_v2, (dptr, unsigned char, size_t))
FN(int, cuPointerGetAttribute, (void *, int, dptr))
#define LOAD(name) name = (name##_t)dlsym(cuda, #name); if (!name) { printf("missing %s\n", #name); return 2; }
enum { N = 1 << 20 };
int main(int argc, char **argv) {
    int leak = argc > 1 && !strcmp(argv[1], "leak");
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 2;
    LOAD(cuInit) LOAD(cuMemHostAlloc) LOAD(cuMemAllocHost_v2) LOAD(cuMemFreeHost)
    LOAD(cuMemHostGetFlags) LOAD(cuMemHostGetDevicePointer_v2) LOAD(cuMemAlloc_v2)
    LOAD(cuMemcpyHtoDAsync_v2) LOAD(cuMemcpyDtoHAsync_v2) LOAD(cuMemcpy) LOAD(cuMemsetD8_v2)
    LOAD(cuStreamSynchronize) LOAD(cuPointerGetAttributes)
    LOAD(cuPointerGetAttribute)
    printf("init rc=%d\n", cuInit(0));
    unsigned char *a = 0, *b = 0;
    printf("hostalloc rc=%d\n", cuMemHostAlloc((void **)&a, N, 0x01 | 0x02));
    printf("allochost rc=%d\n", cuMemAllocHost_v2((void **)&b, N));
    if (!a || !b) return 3;
    for (int i = 0; i < N; i++) a[i] = (unsigned char)(i * 7 + 3);
    dptr d = 0;
    printf("alloc rc=%d\n", cuMemAlloc_v2(&d, N));
    printf("htod rc=%d\n", cuMemcpyHtoDAsync_v2(d, a, N, 0));
    printf("dtoh rc=%d\n", cuMemcpyDtoHAsync_v2(b, d, N, 0));
    /* Both copies are asynchronous (posted): b holds the bytes once the stream has run them. */
    printf("sync rc=%d\n", cuStreamSynchronize(0));
    printf("same=%d\n", memcmp(a, b, N) == 0);
    dptr alias = 0;
    int r;
    r = cuMemHostGetDevicePointer_v2(&alias, a, 0);
    printf("devptr rc=%d nonzero=%d same_address=%d\n", r, alias != 0, alias == (dptr)a);
    dptr q = 0;
    r = cuPointerGetAttribute(&q, 3, (dptr)(a + 16));
    printf("attr devptr rc=%d match=%d\n", r, q == alias + 16);
    q = 0;
    r = cuPointerGetAttribute(&q, 4, alias + 16);
    printf("attr hostptr rc=%d match=%d\n", r, q == (dptr)(a + 16));
    unsigned kind = 0;
    r = cuPointerGetAttribute(&kind, 2, (dptr)a);
    printf("attr type rc=%d host=%d\n", r, kind == 1);
    printf("memset rc=%d\n", cuMemsetD8_v2((dptr)(a + 8), 0x5a, 100));
    int set = 1;
    for (int i = 8; i < 108; i++) set &= a[i] == 0x5a;
    printf("memset seen=%d untouched=%d\n", set, a[108] == (unsigned char)(108 * 7 + 3));
    memset(b, 0, 4096);
    printf("pinned copy rc=%d\n", cuMemcpy((dptr)b, (dptr)a, 4096));
    printf("pinned copy same=%d\n", memcmp(a, b, 4096) == 0);
    if (alias) printf("overrun rc=%d\n", cuMemcpy(d, alias + N - 8, 16));
    {
        /* As cudart's cudaPointerGetAttributes asks, repeatedly: CONTEXT, MEMORY_TYPE,
         * DEVICE_POINTER, DEVICE_ORDINAL; then SYNC_MEMOPS, which a set could change. */
        int attrs[4] = {1, 2, 3, 9};
        void *ctx = 0; unsigned type = 0; dptr dev = 0; int ordinal = -1;
        void *data[4] = {&ctx, &type, &dev, &ordinal};
        int rc = 0;
        for (int i = 0; i < 10; i++) rc |= cuPointerGetAttributes(4, attrs, data, (dptr)(a + 16));
        printf("attrs rc=%d ctx=%p type=%u devptr=%d ordinal=%d\n", rc, ctx, type,
               dev == alias + 16, ordinal);
        int sync_attr = 6; unsigned sync = 0; void *sync_data = &sync;
        rc = 0;
        for (int i = 0; i < 3; i++) rc |= cuPointerGetAttributes(1, &sync_attr, &sync_data, (dptr)(a + 16));
        printf("sync memops rc=%d value=%u\n", rc, sync);
    }
    unsigned flags = 0;
    r = cuMemHostGetFlags(&flags, a + 5);
    printf("flags rc=%d value=%u\n", r, flags);
    if (leak) { printf("leaving\n"); return 0; }
    printf("free a rc=%d\n", cuMemFreeHost(a));
    printf("free b rc=%d\n", cuMemFreeHost(b));
    printf("free again rc=%d\n", cuMemFreeHost(a));
    return 0;
}
"#;

fn program() -> PathBuf {
    c_program("zero_copy_client", PROGRAM, &["-ldl"])
}

fn run(host: &Host, args: &[&str], env: &[(&str, &str)]) -> String {
    run_client(host.client(&program()).args(args).envs(env.iter().copied())).stdout
}

fn expect(stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            stdout.lines().any(|l| l == *line),
            "missing `{line}` in:\n{stdout}"
        );
    }
}

/// Bulk blocks of a 16 MiB region (8 channels) in the default 64 KiB blocks.
fn total_blocks() -> usize {
    let config = transport::RegionConfig {
        channel_count: 8,
        ..Default::default()
    }
    .fit_to(16 << 20)
    .expect("config");
    (config.bulk_size / u64::from(config.bulk_block_size)) as usize
}

#[test]
fn pinned_memory_lives_in_the_region_and_the_gpu_copies_it_directly() {
    let host = start_host("e2e");
    let stdout = run(&host, &[], &[]);
    expect(
        &stdout,
        &[
            "init rc=0",
            "hostalloc rc=0",
            "allochost rc=0",
            "alloc rc=0",
            "htod rc=0",
            "dtoh rc=0",
            "sync rc=0",
            "same=1",
            "attrs rc=0 ctx=0x1000 type=1 devptr=1 ordinal=0",
            "sync memops rc=0 value=1",
            // The worker maps the block at the guest's address, so the alias is the pointer.
            "devptr rc=0 nonzero=1 same_address=1",
            "attr devptr rc=0 match=1",
            "attr hostptr rc=0 match=1",
            "attr type rc=0 host=1",
            "memset rc=0",
            "memset seen=1 untouched=1",
            "pinned copy rc=0",
            "pinned copy same=1",
            // A range running past the block's end is, at the guest's own address, ordinary guest
            // memory (the rest of the region): copied like any pageable range, as natively. The
            // host's refusal of alias ranges past a block is the hostile-guest test's.
            "overrun rc=0",
            "flags rc=0 value=3",
            "free a rc=0",
            "free b rc=0",
            "free again rc=1",
        ],
    );
    let log = host.driver_log();
    let registered: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("cuMemHostRegister_v2"))
        .collect();
    assert_eq!(
        registered, ["cuMemHostRegister_v2 flags=3 len=1048576"; 2],
        "{log}"
    );
    assert_eq!(
        log.matches("cuMemHostUnregister len=1048576").count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("cuMemcpyAsync len=1048576"),
        "the copies ran on the host from the alias: {log}"
    );
    assert!(!log.contains("bytes shipped"), "{log}");
    assert!(log.contains("cuMemsetD8_v2 len=100"), "{log}");
    // The block's context and device came from the host once; the rest the guest knew, and
    // SYNC_MEMOPS (settable) was asked each time.
    assert_eq!(
        log.matches("cuPointerGetAttributes n=4").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("cuPointerGetAttributes n=1").count(),
        3,
        "{log}"
    );
    assert_eq!(
        free_blocks_reach(&host, total_blocks()),
        total_blocks(),
        "freed blocks went back to the bulk area"
    );
}

#[test]
fn asynchronous_copies_with_a_pinned_end_are_posted() {
    let host = start_host("posted-copies");
    let trace = support::tmp("zero-copy-posted.trace");
    let _ = std::fs::remove_file(&trace);
    let stdout = run(
        &host,
        &[],
        &[("VGPU_TRACE", trace.to_str().expect("utf-8 path"))],
    );
    expect(&stdout, &["sync rc=0", "same=1", "pinned copy same=1"]);
    let text = std::fs::read_to_string(&trace).expect("trace written");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!("] {name}(")))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_owned()
    };
    // Nothing but addresses travels, so the stream-ordered copies only enqueue work...
    assert!(line("cuMemcpyHtoDAsync_v2").contains("-> posted"), "{text}");
    assert!(line("cuMemcpyDtoHAsync_v2").contains("-> posted"), "{text}");
    // ...while the synchronous unified copy between two pinned blocks waits for the host.
    assert!(line("cuMemcpy").contains("-> CUDA_SUCCESS"), "{text}");
}

#[test]
fn a_client_that_exits_without_freeing_leaks_nothing() {
    let host = start_host("leak");
    let stdout = run(&host, &["leak"], &[]);
    expect(&stdout, &["hostalloc rc=0", "same=1", "leaving"]);
    assert_eq!(
        free_blocks_reach(&host, total_blocks()),
        total_blocks(),
        "the supervisor frees a gone client's blocks"
    );
}

#[test]
fn zero_copy_off_keeps_plain_pinned_memory() {
    let host = start_host("off");
    let stdout = run(&host, &[], &[("VGPU_ZERO_COPY", "0"), ("VGPU_LOG", "off")]);
    expect(
        &stdout,
        &[
            "hostalloc rc=0",
            "htod rc=0",
            "dtoh rc=0",
            "sync rc=0",
            "same=1",
            // CUDA_ERROR_NOT_SUPPORTED: plain guest memory has no device alias.
            "devptr rc=801 nonzero=0 same_address=0",
            "memset seen=1 untouched=1",
            "pinned copy same=1",
            "flags rc=0 value=3",
            "free a rc=0",
            "free b rc=0",
        ],
    );
    let log = host.driver_log();
    assert!(!log.contains("cuMemHostRegister_v2"), "{log}");
    assert!(
        log.contains("cuMemcpyHtoDAsync_v2 (bytes shipped)"),
        "{log}"
    );
}

#[test]
fn a_hostile_guest_is_refused_blocks_and_addresses_that_are_not_its_own() {
    let host = start_host("hostile");
    let mut guest = RawGuest::connect(host.region());
    let alloc = shim_macros::cuda_call_id!(cuMemHostAlloc);
    let free = shim_macros::cuda_call_id!(cuMemFreeHost);
    let copy = shim_macros::cuda_call_id!(cuMemcpy);
    let (invalid, out_of_memory) = (1, 2);

    assert_eq!(
        guest.call(free, &[12345], None).0,
        invalid,
        "unknown offset"
    );
    assert_eq!(
        guest.call_tail(alloc, &[1 << 40], Some(0), &[0]).0,
        out_of_memory
    );
    assert_eq!(guest.call_tail(alloc, &[0], Some(0), &[0]).0, out_of_memory);
    assert_ne!(guest.call(alloc, &[1], None).0, 0, "truncated request");
    assert_ne!(
        guest.call(alloc, &[4096], Some(0)).0,
        0,
        "no guest bulk base"
    );

    // A guest bulk base where nothing may be mapped (below mmap_min_addr, misaligned, past the
    // address space) only costs the same-address view: the block is still placed.
    for base in [0x1000, 0x1234_5678, u64::MAX - 4095] {
        let (rc, body) = guest.call_tail(alloc, &[4096], Some(0), &[base]);
        assert_eq!(rc, 0, "base {base:#x}");
        let offset: u64 = Decoder::new(&body).get().unwrap();
        assert_eq!(guest.call(free, &[offset], None).0, 0);
    }

    let (rc, body) = guest.call_tail(alloc, &[4096], Some(0), &[0]);
    assert_eq!(rc, 0);
    let mut dec = Decoder::new(&body);
    let (offset, len, alias): (u64, u64, u64) =
        (dec.get().unwrap(), dec.get().unwrap(), dec.get().unwrap());
    assert_eq!(len, 64 << 10, "whole bulk blocks");
    assert_ne!(alias, 0);

    // Host-worker memory that is not the client's block: refused, never copied.
    let elsewhere = alias.wrapping_sub(1 << 20);
    assert_eq!(
        guest.call(copy, &[alias, elsewhere, 16, 0], None).0,
        invalid
    );
    assert_eq!(
        guest.call(copy, &[elsewhere, alias, 16, 0], None).0,
        invalid
    );
    assert_eq!(
        guest.call(copy, &[alias, alias + len - 8, 16, 0], None).0,
        invalid,
        "a range running past the block"
    );
    assert_eq!(
        guest.call(copy, &[alias + 64, alias, 64, 0], None).0,
        0,
        "inside its own block"
    );

    assert_eq!(
        guest.call(free, &[offset + 4096], None).0,
        invalid,
        "not a block start"
    );
    assert_eq!(guest.call(free, &[offset], None).0, 0);
    assert_eq!(guest.call(free, &[offset], None).0, invalid, "double free");
    assert_eq!(
        guest.call(copy, &[alias + 64, alias, 64, 0], None).0,
        invalid,
        "a freed block is no longer the client's"
    );
}
