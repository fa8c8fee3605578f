/* shm_open when dsmd cannot be reached: must fail with an errno, promptly. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd >= 0) { printf("unexpectedly opened\n"); return 1; }
    printf("errno=%d (%s)\n", errno, strerror(errno));
    return errno == ECONNREFUSED ? 0 : 2;
}
