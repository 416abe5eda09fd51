/* Preload observer for the shim's preload-safety test (tests/tests/preload.rs).
 *
 * Preloaded in BOTH runs of each program (with and without the shim), it writes, at process exit,
 * what the process holds: its threads, its open fds and the files it maps, into
 * $VGPU_OBSERVE_DIR/report.<pid>. The test compares the two runs' reports. It reports from a
 * destructor (exit) and from an interposed _exit (dash and forked children end that way). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char report[1 << 20];
static size_t used;

static void append(const char *text) {
    size_t n = strlen(text);
    if (used + n < sizeof report) {
        memcpy(report + used, text, n);
        used += n;
    }
}

static void list_tasks(void) {
    DIR *dir = opendir("/proc/self/task");
    if (!dir) return;
    int tasks = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] != '.') tasks++;
    }
    closedir(dir);
    char line[64];
    snprintf(line, sizeof line, "tasks %d\n", tasks);
    append(line);
}

static void list_fds(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return;
    int own = dirfd(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        char path[300], target[4096], line[4400];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = 0;
        snprintf(line, sizeof line, "fd %s %s\n", e->d_name, target);
        append(line);
    }
    closedir(dir);
}

static void list_maps(void) {
    static char maps[1 << 20];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t n = 0;
    ssize_t got;
    while (n < sizeof maps - 1 && (got = read(fd, maps + n, sizeof maps - 1 - n)) > 0) n += got;
    close(fd);
    maps[n] = 0;
    for (char *line = strtok(maps, "\n"); line; line = strtok(NULL, "\n")) {
        append("map ");
        append(line);
        append("\n");
    }
}

static int reported;

static void observe(void) {
    const char *out_dir = getenv("VGPU_OBSERVE_DIR");
    if (!out_dir || reported) return;
    reported = 1;
    char exe[4096] = {0};
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n < 0 ? 0 : n] = 0;
    append("exe ");
    append(exe);
    append("\n");
    list_tasks();
    list_fds();
    list_maps();
    char path[4200];
    snprintf(path, sizeof path, "%s/report.%d", out_dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    for (size_t done = 0; done < used;) {
        ssize_t w = write(fd, report + done, used - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    close(fd);
}

__attribute__((destructor)) static void observe_at_exit(void) { observe(); }

void _exit(int status) {
    observe();
    for (;;) syscall(SYS_exit_group, status);
}
