/*
 * ivshmem ping-pong: checks that a host process and a guest process see each other's writes
 * through a QEMU ivshmem-plain region, in both directions.
 *
 *   ivshmem_pingpong host  [PATH] [ROUNDS]   PATH: the /dev/shm backing file
 *   ivshmem_pingpong guest [PATH] [ROUNDS]   PATH: /sys/bus/pci/devices/<BDF>/resource2
 *
 * PATH defaults to $VGPU_REGION, ROUNDS to 1000. Every wait is bounded by $VGPU_PINGPONG_TIMEOUT
 * seconds (default 60); a timeout is an error naming what was awaited. Exit 0 on success.
 *
 * Region layout (byte offsets; every control word is a 64-bit atomic):
 *   0    host_ready   host stores MAGIC_HOST after filling the host pattern (release)
 *   64   guest_ready  guest stores MAGIC_GUEST after checking the host pattern (release)
 *   128  ping_seq     host stores round i after ping_value (release)
 *   136  ping_value
 *   192  pong_seq     guest stores round i after pong_value (release)
 *   200  pong_value
 *   256  guest_done   guest stores MAGIC_DONE after filling the guest pattern (release)
 *   [4096, size/2)    host pattern, written by the host, checked by the guest
 *   [size/2, size)    guest pattern, written by the guest, checked by the host
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC_HOST  0x56475055484f5354ull /* "VGPUHOST" */
#define MAGIC_GUEST 0x5647505547554553ull /* "VGPUGUES" */
#define MAGIC_DONE  0x56475055444f4e45ull /* "VGPUDONE" */
#define GUEST_SALT  0xa5a5a5a5a5a5a5a5ull

enum { OFF_HOST_READY = 0, OFF_GUEST_READY = 64, OFF_PING_SEQ = 128, OFF_PING_VALUE = 136,
       OFF_PONG_SEQ = 192, OFF_PONG_VALUE = 200, OFF_GUEST_DONE = 256, OFF_DATA = 4096 };

static const char *role = "?";
static double timeout_s = 60.0;

static uint64_t mix(uint64_t x) /* splitmix64 */
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint64_t *word(uint8_t *base, size_t off) { return (volatile uint64_t *)(base + off); }

static void store_release(uint8_t *base, size_t off, uint64_t v)
{
    __atomic_store_n(word(base, off), v, __ATOMIC_RELEASE);
}

/* Spins until the word at `off` equals `want`; exits 1 on timeout. */
static void wait_for(uint8_t *base, size_t off, uint64_t want, const char *what, uint64_t round)
{
    double deadline = now_s() + timeout_s;
    unsigned spins = 0;
    while (__atomic_load_n(word(base, off), __ATOMIC_ACQUIRE) != want) {
        if (++spins % 1024 == 0) {
            if (now_s() > deadline) {
                fprintf(stderr, "%s: error: timed out after %.0fs waiting for %s (round %" PRIu64
                        ", word=0x%" PRIx64 ", want 0x%" PRIx64 ")\n", role, timeout_s, what, round,
                        __atomic_load_n(word(base, off), __ATOMIC_ACQUIRE), want);
                exit(1);
            }
            sched_yield();
        }
        __builtin_ia32_pause();
    }
}

static void fill(uint8_t *base, size_t from, size_t to, uint64_t seed)
{
    for (size_t off = from; off < to; off += 8)
        *word(base, off) = mix(seed ^ off);
}

/* Returns the number of mismatching words (prints the first). */
static size_t check(uint8_t *base, size_t from, size_t to, uint64_t seed, const char *what)
{
    size_t bad = 0;
    for (size_t off = from; off < to; off += 8) {
        uint64_t got = *word(base, off), want = mix(seed ^ off);
        if (got != want && bad++ == 0)
            fprintf(stderr, "%s: error: %s mismatch at offset %zu: 0x%" PRIx64 " != 0x%" PRIx64 "\n",
                    role, what, off, got, want);
    }
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "host") != 0 && strcmp(argv[1], "guest") != 0)) {
        fprintf(stderr, "usage: %s host|guest [PATH] [ROUNDS]\n", argv[0]);
        return 2;
    }
    role = argv[1];
    int is_host = strcmp(role, "host") == 0;
    const char *path = argc > 2 ? argv[2] : getenv("VGPU_REGION");
    uint64_t rounds = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
    const char *t = getenv("VGPU_PINGPONG_TIMEOUT");
    if (t != NULL && atof(t) > 0)
        timeout_s = atof(t);
    if (path == NULL || *path == '\0') {
        fprintf(stderr, "%s: error: no region path (argument or VGPU_REGION)\n", role);
        return 2;
    }
    if (rounds == 0) {
        fprintf(stderr, "%s: error: ROUNDS must be a positive integer\n", role);
        return 2;
    }

    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) {
        fprintf(stderr, "%s: error: open %s: %s\n", role, path, strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 2 * OFF_DATA) {
        fprintf(stderr, "%s: error: %s is too small (%lld bytes, need %d)\n", role, path,
                (long long)st.st_size, 2 * OFF_DATA);
        return 1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        fprintf(stderr, "%s: error: mmap %s (%zu bytes): %s\n", role, path, size, strerror(errno));
        return 1;
    }
    size_t half = size / 2;
    double t0 = now_s();

    if (is_host) {
        fill(base, OFF_DATA, half, MAGIC_HOST);
        store_release(base, OFF_HOST_READY, MAGIC_HOST);
        printf("%s: region %s, %zu bytes; host pattern written, waiting for the guest\n", role, path, size);
        fflush(stdout);
        wait_for(base, OFF_GUEST_READY, MAGIC_GUEST, "the guest to attach", 0);
        double t_attached = now_s();
        for (uint64_t i = 1; i <= rounds; i++) {
            *word(base, OFF_PING_VALUE) = mix(i);
            store_release(base, OFF_PING_SEQ, i);
            wait_for(base, OFF_PONG_SEQ, i, "pong", i);
            uint64_t got = *word(base, OFF_PONG_VALUE);
            if (got != (mix(i) ^ GUEST_SALT)) {
                fprintf(stderr, "%s: error: round %" PRIu64 ": pong 0x%" PRIx64 " != 0x%" PRIx64 "\n",
                        role, i, got, (uint64_t)(mix(i) ^ GUEST_SALT));
                return 1;
            }
        }
        double t_rounds = now_s();
        wait_for(base, OFF_GUEST_DONE, MAGIC_DONE, "the guest pattern", rounds);
        if (check(base, half, size, MAGIC_GUEST, "guest pattern") != 0)
            return 1;
        printf("%s: ok: guest attached after %.2fs; %" PRIu64 " round trips in %.6fs (%.2f us each); "
               "%zu bytes checked each way\n", role, t_attached - t0, rounds, t_rounds - t_attached,
               (t_rounds - t_attached) * 1e6 / (double)rounds, half - OFF_DATA);
    } else {
        printf("%s: region %s, %zu bytes; waiting for the host\n", role, path, size);
        fflush(stdout);
        wait_for(base, OFF_HOST_READY, MAGIC_HOST, "the host to fill the region", 0);
        if (check(base, OFF_DATA, half, MAGIC_HOST, "host pattern") != 0)
            return 1;
        store_release(base, OFF_GUEST_READY, MAGIC_GUEST);
        for (uint64_t i = 1; i <= rounds; i++) {
            wait_for(base, OFF_PING_SEQ, i, "ping", i);
            uint64_t got = *word(base, OFF_PING_VALUE);
            if (got != mix(i)) {
                fprintf(stderr, "%s: error: round %" PRIu64 ": ping 0x%" PRIx64 " != 0x%" PRIx64 "\n",
                        role, i, got, mix(i));
                return 1;
            }
            *word(base, OFF_PONG_VALUE) = got ^ GUEST_SALT;
            store_release(base, OFF_PONG_SEQ, i);
        }
        fill(base, half, size, MAGIC_GUEST);
        store_release(base, OFF_GUEST_DONE, MAGIC_DONE);
        printf("%s: ok: %" PRIu64 " rounds answered in %.3fs; host pattern verified\n", role, rounds,
               now_s() - t0);
    }
    fflush(stdout);
    munmap(base, size);
    close(fd);
    return 0;
}
