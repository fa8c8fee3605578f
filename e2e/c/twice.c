/* One segment mapped twice in one process (issue 9): distinct addresses, separate
 * protections, and a write on another node reaches both; unmapping one leaves the other.
 *
 *   twice NAME writer   node 1: creates, waits for node 2, writes, waits
 *   twice NAME maps     node 2: two mappings (and a third of one page at an offset) */
#include <errno.h>
#include <string.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)
#define FLAG(p, i) ((long *)((char *)(p) + 4096) + (i))

static void wait_flag(void *p, int i) {
    for (int n = 0; __atomic_load_n(FLAG(p, i), __ATOMIC_ACQUIRE) == 0; n++) {
        CHECK(n < 60000, "timed out waiting for flag %d", i);
        usleep(1000);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: twice NAME writer|maps\n"); return 2; }
    if (!strcmp(argv[2], "writer")) {
        long *p = open_segment(argv[1], 0, 8192);
        wait_flag(p, 0);
        p[2] = 7;
        __atomic_store_n(FLAG(p, 1), 1, __ATOMIC_RELEASE);
        wait_flag(p, 2);
        return 0;
    }
    int fd = -1;
    for (int i = 0; i < 4000 && fd < 0; i++) {
        fd = shm_open(argv[1], O_RDWR, 0);
        if (fd < 0) usleep(5000);
    }
    CHECK(fd >= 0, "shm_open: %s", strerror(errno));
    struct stat st;
    for (int i = 0; i < 4000 && (fstat(fd, &st) || st.st_size < 8192); i++) usleep(5000);
    long *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    long *b = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(a != MAP_FAILED && b != MAP_FAILED, "mmap: %s", strerror(errno));
    CHECK(a != b, "the second mapping got the first one's address");
    a[0] = 5;
    CHECK(b[0] == 5, "a write through one mapping is not seen through the other");
    CHECK(mprotect(b, 8192, PROT_READ) == 0, "mprotect: %s", strerror(errno));
    a[1] = 6; /* still writable through the first */
    CHECK(b[1] == 6, "read through the read-only mapping");
    __atomic_store_n(FLAG(a, 0), 1, __ATOMIC_RELEASE);
    wait_flag(b, 1);
    CHECK(a[2] == 7 && b[2] == 7, "node 1's write reached %ld and %ld", a[2], b[2]);
    CHECK(munmap(a, 8192) == 0, "munmap");
    CHECK(b[2] == 7 && b[0] == 5, "the other mapping broke after munmap of one");
    long *c = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
    CHECK(c != MAP_FAILED && c != b + 512, "mapping one page at an offset");
    CHECK(c[1] == 1, "the offset mapping reads %ld", c[1]);
    CHECK(mprotect(b, 8192, PROT_READ | PROT_WRITE) == 0, "mprotect back");
    __atomic_store_n(FLAG(b, 2), 1, __ATOMIC_RELEASE);
    printf("twice ok\n");
    return 0;
}
