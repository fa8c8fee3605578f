/* No cap on the segments one process opens (issue 9): 1000 segments opened, each mapped,
 * written and unmapped; then the first one's descriptor, opened 999 segments ago, is mapped
 * again and written — which another node must see (a forgotten descriptor would map locally).
 *
 *   many PREFIX create N   node 1
 *   many PREFIX check N    node 2 */
#include <errno.h>
#include <string.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: many PREFIX create|check N\n"); return 2; }
    int n = atoi(argv[3]);
    char name[256];
    if (!strcmp(argv[2], "create")) {
        int first = -1;
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "%s-%d", argv[1], i);
            int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
            CHECK(fd >= 0, "shm_open #%d: %s", i, strerror(errno));
            CHECK(ftruncate(fd, 4096) == 0, "ftruncate #%d: %s", i, strerror(errno));
            long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            CHECK(p != MAP_FAILED, "mmap #%d: %s", i, strerror(errno));
            p[0] = i;
            CHECK(munmap(p, 4096) == 0, "munmap #%d", i);
            if (i == 0) first = fd;
            else close(fd);
        }
        long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, first, 0);
        CHECK(p != MAP_FAILED, "mmap of the first again: %s", strerror(errno));
        CHECK(p[0] == 0, "first segment reads %ld", p[0]);
        p[1] = 77;
        printf("created %d\n", n);
        return 0;
    }
    for (int i = 0; i < n; i += n - 1) {
        snprintf(name, sizeof name, "%s-%d", argv[1], i);
        long *p = open_segment(name, 1, 4096);
        CHECK(p[0] == i, "segment %d reads %ld", i, p[0]);
        if (i == 0) CHECK(p[1] == 77, "the write through the first segment's old descriptor is lost (%ld)", p[1]);
    }
    printf("checked\n");
    return 0;
}
