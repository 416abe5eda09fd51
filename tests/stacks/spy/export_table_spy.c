/*
 * export_table_spy.so: an LD_PRELOAD observer for the REAL driver, used on the GPU machine to learn
 * how a runtime uses an undocumented cuGetExportTable table (clean-room observation).
 *
 * It interposes cuGetProcAddress(_v2), cuGetExportTable and dlsym. When a table whose UUID is listed
 * in $SPY_TABLES (comma-separated hex, memory order; "all" for every table) is requested, it returns
 * a copy whose slots are logging trampolines: each logs its index, nine integer arguments (six in
 * registers, three stack words), 16 bytes behind every pointer-looking argument before and after
 * the call, and the result, then returns the real slot's result. All nine words are passed on,
 * so a slot may take up to nine integer/pointer arguments (NVRTC's compute-cache key slot takes
 * nine); for a slot that takes fewer, the extra words are the caller's stack and are ignored.
 * Word 0 is copied as is when it is below 4096 (a size word); the table is assumed to be
 * $SPY_WORDS words long (default: size word / 8, or 32).
 *
 * $SPY_PEEK sets how many bytes are shown behind a pointer (default 16, at most 256); with
 * $SPY_DEEP=1, pointer-looking words inside what was shown after the call are shown too (one level).
 * $SPY_FAIL=XXXXXXXX:N=RC (first 8 hex digits of a UUID, slot, decimal result) makes that slot
 * return RC without calling the real one: how a client behaves when the driver lacks it.
 *
 * Build: gcc -shared -fPIC -O1 -o export_table_spy.so export_table_spy.c -ldl
 * Log:   stderr lines starting "SPY ".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

typedef int (*export_fn)(const void **, const void *);
typedef int (*proc_v2_fn)(const char *, void **, int, uint64_t, int *);
typedef int (*proc_fn)(const char *, void **, int, uint64_t);
typedef uint64_t (*slot_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                            uint64_t, uint64_t);
typedef void *(*dlsym_fn)(void *, const char *);

#define MAX_TABLES 8
#define MAX_WORDS 64
struct spied {
    unsigned char id[16];
    const void *real[MAX_WORDS];
    const void *fake[MAX_WORDS];
    int words;
};
static struct spied tables[MAX_TABLES];
static int ntables;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static dlsym_fn real_dlsym(void) {
    static dlsym_fn f;
    if (!f) f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!f) f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    return f;
}

static void *libcuda(void) {
    static void *h;
    if (!h) h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) h = dlopen("libcuda.so.1", RTLD_NOW);
    return h;
}

static void *real_sym(const char *name) {
    /* RTLD_NEXT from this library finds the driver's definition. */
    void *p = real_dlsym()(RTLD_NEXT, name);
    if (!p && libcuda()) p = real_dlsym()(libcuda(), name);
    return p;
}

static void hexid(const unsigned char *id, char *out) {
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", id[i]);
}

static int wanted(const char *hex) {
    const char *want = getenv("SPY_TABLES");
    if (!want) return 0;
    if (!strcmp(want, "all")) return 1;
    return strstr(want, hex) != NULL;
}

static int peek_len(void) {
    const char *s = getenv("SPY_PEEK");
    int n = s ? atoi(s) : 16;
    return n < 8 ? 8 : n > 256 ? 256 : n;
}

/* Shows up to SPY_PEEK readable bytes at `a`; returns how many were shown (0 if unreadable). */
static int peek_bytes(const char *tag, int idx, uint64_t a, unsigned char *buf) {
    if (a < 0x10000 || a >= 0x800000000000ull) return 0;
    int n = peek_len();
    struct iovec local = {buf, (size_t)n}, remote = {(void *)a, (size_t)n};
    while (n >= 8 && process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)n) {
        n /= 2;
        local.iov_len = remote.iov_len = (size_t)n;
    }
    if (n < 8) return 0;
    fprintf(stderr, "SPY   %s arg%d *%#lx =", tag, idx, (unsigned long)a);
    for (int i = 0; i < n; i++) fprintf(stderr, " %02x", buf[i]);
    fprintf(stderr, "\n");
    return n;
}

static void peek(const char *tag, int idx, uint64_t a) {
    unsigned char buf[256], inner[256];
    int n = peek_bytes(tag, idx, a, buf);
    const char *deep = getenv("SPY_DEEP");
    if (!deep || strcmp(deep, "1") || strcmp(tag, "after ")) return;
    for (int i = 0; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        char t[32];
        snprintf(t, sizeof t, "  +%d->", i);
        peek_bytes(t, idx, w, inner);
    }
}

/* SPY_FAIL=XXXXXXXX:N=RC: the forced result of slot N of that table, or -1. */
static long forced_result(const char *hex, int s) {
    const char *f = getenv("SPY_FAIL");
    char want[32];
    snprintf(want, sizeof want, "%.8s:%d=", hex, s);
    const char *at = f ? strstr(f, want) : NULL;
    return at ? atol(at + strlen(want)) : -1;
}

static uint64_t call_slot(int t, int s, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                          uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    uint64_t a[9] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
    char hex[33];
    hexid(tables[t].id, hex);
    fprintf(stderr, "SPY call %.8s[%d](%#lx, %#lx, %#lx, %#lx, %#lx, %#lx | stack %#lx, %#lx, %#lx) tid %ld\n",
            hex, s, (unsigned long)a0, (unsigned long)a1, (unsigned long)a2, (unsigned long)a3,
            (unsigned long)a4, (unsigned long)a5, (unsigned long)a6, (unsigned long)a7,
            (unsigned long)a8, (long)gettid());
    for (int i = 0; i < 9; i++) peek("before", i, a[i]);
    long forced = forced_result(hex, s);
    uint64_t r = forced >= 0 ? (uint64_t)forced
                             : ((slot_fn)tables[t].real[s])(a0, a1, a2, a3, a4, a5, a6, a7, a8);
    for (int i = 0; i < 9; i++) peek("after ", i, a[i]);
    fprintf(stderr, "SPY  ret %.8s[%d] = %#lx (low32 %d)\n", hex, s, (unsigned long)r, (int)(uint32_t)r);
    return r;
}

#define TR(t, s) \
    static uint64_t tr_##t##_##s(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f, \
                                 uint64_t g, uint64_t h, uint64_t i) { \
        return call_slot(t, s, a, b, c, d, e, f, g, h, i); \
    }
#define TR8(t, b) TR(t, b##0) TR(t, b##1) TR(t, b##2) TR(t, b##3) TR(t, b##4) TR(t, b##5) TR(t, b##6) TR(t, b##7)
#define TRT(t) TR(t,0) TR(t,1) TR(t,2) TR(t,3) TR(t,4) TR(t,5) TR(t,6) TR(t,7) TR(t,8) TR(t,9) \
    TR8(t,1) TR8(t,2) TR8(t,3) TR8(t,4) TR8(t,5) TR(t,60) TR(t,61) TR(t,62) TR(t,63) \
    TR(t,18) TR(t,19) TR(t,28) TR(t,29) TR(t,38) TR(t,39) TR(t,48) TR(t,49) TR(t,58) TR(t,59)
/* tr_t_10..17 come from TR8(t,1) (10..17), 20..27, ... ; 18,19,28,... added explicitly. */
TRT(0) TRT(1) TRT(2) TRT(3) TRT(4) TRT(5) TRT(6) TRT(7)

#define L8(t, b) (void *)tr_##t##_##b##0, (void *)tr_##t##_##b##1, (void *)tr_##t##_##b##2, (void *)tr_##t##_##b##3, \
    (void *)tr_##t##_##b##4, (void *)tr_##t##_##b##5, (void *)tr_##t##_##b##6, (void *)tr_##t##_##b##7, \
    (void *)tr_##t##_##b##8, (void *)tr_##t##_##b##9
#define LT(t) {(void *)tr_##t##_0, (void *)tr_##t##_1, (void *)tr_##t##_2, (void *)tr_##t##_3, (void *)tr_##t##_4, \
    (void *)tr_##t##_5, (void *)tr_##t##_6, (void *)tr_##t##_7, (void *)tr_##t##_8, (void *)tr_##t##_9, \
    L8(t, 1), L8(t, 2), L8(t, 3), L8(t, 4), L8(t, 5), (void *)tr_##t##_60, (void *)tr_##t##_61, \
    (void *)tr_##t##_62, (void *)tr_##t##_63}
static void *const trampolines[MAX_TABLES][MAX_WORDS] = {LT(0), LT(1), LT(2), LT(3), LT(4), LT(5), LT(6), LT(7)};

static int spy_export_table(const void **pp, const void *pid) {
    export_fn real = (export_fn)real_sym("cuGetExportTable");
    if (!real) return 999;
    int rc = real(pp, pid);
    char hex[33];
    hexid(pid, hex);
    fprintf(stderr, "SPY cuGetExportTable %s -> %d table %p\n", hex, rc, rc == 0 ? *pp : NULL);
    if (rc != 0 || !wanted(hex)) return rc;
    pthread_mutex_lock(&lock);
    int t;
    for (t = 0; t < ntables; t++)
        if (!memcmp(tables[t].id, pid, 16)) break;
    if (t == ntables && ntables < MAX_TABLES) {
        const void *const *src = *pp;
        uint64_t w0 = (uint64_t)src[0];
        int words = getenv("SPY_WORDS") ? atoi(getenv("SPY_WORDS")) : (w0 < 4096 ? (int)(w0 / 8) : 32);
        if (words > MAX_WORDS) words = MAX_WORDS;
        memcpy(tables[t].id, pid, 16);
        tables[t].words = words;
        fprintf(stderr, "SPY table %s word0 %#lx, wrapping %d words:", hex, (unsigned long)w0, words);
        for (int i = 0; i < words; i++) {
            tables[t].real[i] = src[i];
            Dl_info info;
            if (i == 0 && w0 < 4096) {
                tables[t].fake[i] = src[i];
            } else {
                tables[t].fake[i] = trampolines[t][i];
            }
            if (dladdr(src[i], &info) && info.dli_fbase)
                fprintf(stderr, " [%d]+%#lx", i, (unsigned long)((const char *)src[i] - (const char *)info.dli_fbase));
            else
                fprintf(stderr, " [%d]=%p", i, src[i]);
        }
        fprintf(stderr, "\n");
        ntables++;
    }
    if (t < ntables) *pp = tables[t].fake;
    pthread_mutex_unlock(&lock);
    return rc;
}

int cuGetExportTable(const void **pp, const void *pid) { return spy_export_table(pp, pid); }

int cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status) {
    proc_v2_fn real = (proc_v2_fn)real_sym("cuGetProcAddress_v2");
    int rc = real(sym, pfn, ver, flags, status);
    if (rc == 0 && sym && !strcmp(sym, "cuGetExportTable")) *pfn = (void *)cuGetExportTable;
    if (rc == 0 && sym && !strcmp(sym, "cuGetProcAddress")) *pfn = (void *)cuGetProcAddress_v2;
    return rc;
}

int cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags) {
    proc_fn real = (proc_fn)real_sym("cuGetProcAddress");
    int rc = real(sym, pfn, ver, flags);
    if (rc == 0 && sym && !strcmp(sym, "cuGetExportTable")) *pfn = (void *)cuGetExportTable;
    return rc;
}

void *dlsym(void *handle, const char *name) {
    if (!strcmp(name, "cuGetExportTable")) return (void *)cuGetExportTable;
    if (!strcmp(name, "cuGetProcAddress_v2")) return (void *)cuGetProcAddress_v2;
    if (!strcmp(name, "cuGetProcAddress")) return (void *)cuGetProcAddress;
    return real_dlsym()(handle, name);
}
