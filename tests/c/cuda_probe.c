/* A CUDA client that knows nothing of vgpu: dlopen("libcuda.so.1") and call one function.
 *
 *   cuda_probe               cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY): prints rc and the text
 *   cuda_probe where         also prints which file the symbol came from (dladdr)
 *   cuda_probe init [N]      calls cuInit(0) N times (default 1), printing each rc */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*get_error_string_fn)(int, const char **);
typedef int (*init_fn)(unsigned int);

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "error-string";
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 10;
    }
    if (strcmp(mode, "init") == 0) {
        init_fn init = (init_fn)dlsym(cuda, "cuInit");
        if (!init) return 11;
        int times = argc > 2 ? atoi(argv[2]) : 1;
        for (int i = 0; i < times; i++) printf("cuInit=%d\n", init(0));
        return 0;
    }
    get_error_string_fn get = (get_error_string_fn)dlsym(cuda, "cuGetErrorString");
    if (!get) return 12;
    const char *text = NULL;
    int rc = get(2, &text);
    printf("rc=%d text=%s\n", rc, text ? text : "(null)");
    if (strcmp(mode, "where") == 0) {
        Dl_info info;
        if (!dladdr((void *)get, &info)) return 13;
        printf("from=%s\n", info.dli_fname);
    }
    return 0;
}
