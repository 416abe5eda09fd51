/* A deliberately badly behaved preload library: its constructor opens a file and keeps it. The
 * preload test uses it to prove that its comparison notices such a leak. */
#include <fcntl.h>

__attribute__((constructor)) static void leak_an_fd(void) { (void)open("/dev/null", O_RDONLY); }
