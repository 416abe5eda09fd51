/*
 * Reads the real driver's cuGetErrorName/cuGetErrorString for every code it names; run on the
 * GPU machine. Output (stdout): one line per code, "<code>\t<name>\t<string>", sorted by code:
 * commit it as cuda-headers/probe/errstrings-<driver>.tsv (cuda_headers::results compiles it in).
 * On stderr, what the driver does with codes it does not name and with a NULL out-pointer:
 *   "unknown <fn> <code> rc=<rc> out=<untouched|NULL|"text">"  and  "null-out <fn> rc=<rc>"
 * Build: gcc -std=gnu11 -O2 -Wall -o probe_error_strings probe_error_strings.c -ldl
 * Needs no CUDA header and no cuInit (the driver answers these before it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

typedef int (*text_fn)(int, const char **);

/* A code far above any the driver names; all codes below it are scanned. */
#define SCAN_LIMIT 100000

static const char untouched[] = "untouched";

static void unknown(const char *fn_name, text_fn fn, int code) {
    const char *out = untouched;
    int rc = fn(code, &out);
    if (out == untouched) fprintf(stderr, "unknown %s %d rc=%d out=untouched\n", fn_name, code, rc);
    else if (!out) fprintf(stderr, "unknown %s %d rc=%d out=NULL\n", fn_name, code, rc);
    else fprintf(stderr, "unknown %s %d rc=%d out=\"%s\"\n", fn_name, code, rc, out);
}

int main(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "probe: %s\n", dlerror()); return 2; }
    text_fn name = (text_fn)dlsym(lib, "cuGetErrorName");
    text_fn string = (text_fn)dlsym(lib, "cuGetErrorString");
    if (!name || !string) { fprintf(stderr, "probe: not a CUDA driver\n"); return 2; }
    int first_unknown = -1;
    for (int code = 0; code < SCAN_LIMIT; code++) {
        const char *n = NULL, *s = NULL;
        int rn = name(code, &n), rs = string(code, &s);
        if (rn == 0 && rs == 0 && n && s) {
            printf("%d\t%s\t%s\n", code, n, s);
        } else if (rn == 0 || rs == 0) {
            fprintf(stderr, "probe: code %d named by one function only (%d/%d)\n", code, rn, rs);
            return 3;
        } else if (first_unknown < 0) {
            first_unknown = code;
        }
    }
    int probes[] = {first_unknown, SCAN_LIMIT, 0x7fffffff, -1};
    for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        unknown("cuGetErrorName", name, probes[i]);
        unknown("cuGetErrorString", string, probes[i]);
    }
    fprintf(stderr, "null-out cuGetErrorName rc=%d\n", name(1, NULL));
    fprintf(stderr, "null-out cuGetErrorString rc=%d\n", string(1, NULL));
    fprintf(stderr, "null-out-unknown cuGetErrorName rc=%d\n", name(first_unknown, NULL));
    return 0;
}
