/* A segment grows past its first address span after shm_open (issue 9): 4 GiB, the last page
 * written on one node and read on another.
 *
 *   grow NAME writer   node 1
 *   grow NAME reader   node 2 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)
#define BIG (4ull << 30)

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: grow NAME writer|reader\n"); return 2; }
    if (!strcmp(argv[2], "writer")) {
        int fd = shm_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600);
        CHECK(fd >= 0, "shm_open: %s", strerror(errno));
        /* posix_fallocate grows it cluster-wide too (to 8 KiB first), then ftruncate past the
         * first address span. */
        CHECK(posix_fallocate(fd, 0, 8192) == 0, "posix_fallocate");
        struct stat st;
        CHECK(fstat(fd, &st) == 0 && st.st_size == 8192, "posix_fallocate did not grow it");
        CHECK(fallocate(fd, 0x02 | 0x01 /* PUNCH_HOLE|KEEP_SIZE */, 0, 4096) == -1 && errno == EOPNOTSUPP,
              "punching a hole must be refused");
        CHECK(ftruncate(fd, BIG) == 0, "ftruncate to 4 GiB after shm_open: %s", strerror(errno));
        volatile uint64_t *p = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        CHECK(p != MAP_FAILED, "mmap 4 GiB: %s", strerror(errno));
        p[BIG / 8 - 1] = 0x7777;
        __atomic_store_n(&p[0], 1, __ATOMIC_RELEASE);
        for (int n = 0; __atomic_load_n(&p[1], __ATOMIC_ACQUIRE) != 1; n++) {
            CHECK(n < 60000, "the reader never answered");
            usleep(1000);
        }
        printf("writer ok\n");
        return 0;
    }
    int fd = -1;
    struct stat st;
    for (int n = 0; fd < 0 || fstat(fd, &st) || (uint64_t)st.st_size < BIG; n++) {
        CHECK(n < 30000, "the segment never reached 4 GiB");
        if (fd < 0) fd = shm_open(argv[1], O_RDWR, 0);
        usleep(1000);
    }
    volatile uint64_t *p = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap 4 GiB: %s", strerror(errno));
    for (int n = 0; __atomic_load_n(&p[0], __ATOMIC_ACQUIRE) != 1; n++) {
        CHECK(n < 30000, "the writer never wrote");
        usleep(1000);
    }
    CHECK(p[BIG / 8 - 1] == 0x7777, "the last page reads %lx", (unsigned long)p[BIG / 8 - 1]);
    __atomic_store_n(&p[1], 1, __ATOMIC_RELEASE);
    printf("reader ok\n");
    return 0;
}
