/*
 * Probes the real driver's cuGetProcAddress_v2 for every base name, CUDA version and flag,
 * and prints where the answer changes. Run on the GPU machine by scripts/probe-proc-address.sh;
 * cuda-headers-generate turns its output into cuda-headers/src/generated/proc_address.rs.
 *
 * Input (stdin): base names, one a line, and the exported names after a line "--exports--".
 * Output (stdout): "driver <version>" then, per name and flag, one line per breakpoint:
 *   "<name> <flag> <from_version> <symbol>|-<status>"
 * where <symbol> is the exported name whose address the driver returned ("?" if none matches)
 * and <status> is the CUdriverProcAddressQueryResult when the pointer was NULL.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int versions[] = {
    2000, 2010, 2020, 2030, 2100, 2200, 2300, 3000, 3010, 3020, 3100, 3200, 4000, 4010, 4020,
    5000, 5050, 5500, 6000, 6050, 6500, 7000, 7050, 8000, 9000, 9010, 9020, 10000, 10010,
    10020, 11000, 11010, 11020, 11030, 11040, 11050, 11060, 11070, 11080, 12000, 12010, 12020,
    12030, 12040, 12050, 12060, 12080, 12090, 13000,
};
#define NVERSIONS (sizeof versions / sizeof versions[0])

typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

struct export { const char *name; void *addr; };
static struct export *exports;
static size_t nexports;

static const char *name_of(void *p) {
    for (size_t i = 0; i < nexports; i++)
        if (exports[i].addr == p) return exports[i].name;
    return "?";
}

int main(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { fprintf(stderr, "probe: %s\n", dlerror()); return 2; }
    gpa_fn gpa = (gpa_fn)dlsym(lib, "cuGetProcAddress_v2");
    CUresult (*init)(unsigned) = (CUresult (*)(unsigned))dlsym(lib, "cuInit");
    CUresult (*ver)(int *) = (CUresult (*)(int *))dlsym(lib, "cuDriverGetVersion");
    if (!gpa || !init || !ver) { fprintf(stderr, "probe: not a CUDA driver\n"); return 2; }
    int dv = 0;
    ver(&dv);
    printf("driver %d\n", dv);

    char **bases = NULL; size_t nbases = 0, cap = 0;
    char line[512]; int in_exports = 0; size_t ecap = 0;
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (!strcmp(line, "--exports--")) { in_exports = 1; continue; }
        if (in_exports) {
            if (nexports == ecap) { ecap = ecap ? 2 * ecap : 1024; exports = realloc(exports, ecap * sizeof *exports); }
            exports[nexports].name = strdup(line);
            exports[nexports].addr = dlsym(lib, line);
            nexports++;
        } else {
            if (nbases == cap) { cap = cap ? 2 * cap : 1024; bases = realloc(bases, cap * sizeof *bases); }
            bases[nbases++] = strdup(line);
        }
    }
    static const cuuint64_t flags[] = {CU_GET_PROC_ADDRESS_DEFAULT, CU_GET_PROC_ADDRESS_LEGACY_STREAM,
                                       CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM};
    /* Twice: before cuInit (as cudart does) and after, to show whether the answers differ. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { CUresult r = init(0); printf("cuInit %d\n", (int)r); }
        printf("pass %s\n", pass ? "after-init" : "before-init");
        for (size_t b = 0; b < nbases; b++) {
            for (size_t f = 0; f < 3; f++) {
                char prev[256] = "";
                for (size_t v = 0; v < NVERSIONS; v++) {
                    void *p = NULL;
                    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
                    CUresult r = gpa(bases[b], &p, versions[v], flags[f], &st);
                    char cur[256];
                    if (p) snprintf(cur, sizeof cur, "%s", name_of(p));
                    else snprintf(cur, sizeof cur, "-%d/%d", (int)st, (int)r);
                    if (strcmp(cur, prev)) {
                        printf("%s %llu %d %s\n", bases[b], (unsigned long long)flags[f], versions[v], cur);
                        snprintf(prev, sizeof prev, "%s", cur);
                    }
                }
            }
        }
    }
    return 0;
}
