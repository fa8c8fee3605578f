/* shm_open when dsmd cannot be reached: must fail with an errno, promptly. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd >= 0) { printf("unexpectedly opened\n"); return 1; }
    int first = errno;
    printf("errno=%d (%s)\n", first, strerror(first));
    /* Again: the same errno (the line on stderr came once). */
    fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd >= 0 || errno != first) { printf("second call: fd %d errno %d\n", fd, errno); return 3; }
    return first == ECONNREFUSED ? 0 : 2;
}
