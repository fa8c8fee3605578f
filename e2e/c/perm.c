/* One permission question per run, answered with "ok" or the errno's name (issue 10):
 *
 *   perm NAME create MODE   shm_open(O_CREAT|O_EXCL|O_RDWR, MODE), ftruncate, write
 *   perm NAME open ro|rw    shm_open read-only or read-write
 *   perm NAME read          open read-only, map, print the first byte
 *   perm NAME truncate      open read-write and ftruncate
 *   perm NAME unlink        shm_unlink
 *   perm NAME stat          open read-only, fstat: "uid MODE"
 *   perm NAME chmod MODE    open read-only, fchmod */
#include <errno.h>
#include <string.h>
#include "common.h"

static int answer(int ok) {
    if (ok) {
        printf("ok\n");
        return 0;
    }
    printf("%s\n", errno == EACCES ? "EACCES" : errno == EPERM ? "EPERM" : strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: perm NAME create|open|read|truncate|unlink|stat [ARG]\n"); return 2; }
    const char *name = argv[1], *what = argv[2];
    if (!strcmp(what, "create")) {
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, (mode_t)strtol(argv[3], NULL, 8));
        if (fd < 0) return answer(0);
        if (ftruncate(fd, 4096) != 0) return answer(0);
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) return answer(0);
        p[0] = 'Z';
        return answer(1);
    }
    if (!strcmp(what, "open")) return answer(shm_open(name, !strcmp(argv[3], "rw") ? O_RDWR : O_RDONLY, 0) >= 0);
    if (!strcmp(what, "read")) {
        int fd = shm_open(name, O_RDONLY, 0);
        if (fd < 0) return answer(0);
        char *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) return answer(0);
        printf("read %c\n", p[0]);
        return 0;
    }
    if (!strcmp(what, "truncate")) {
        int fd = shm_open(name, O_RDWR, 0);
        return answer(fd >= 0 && ftruncate(fd, 8192) == 0);
    }
    if (!strcmp(what, "unlink")) return answer(shm_unlink(name) == 0);
    if (!strcmp(what, "chmod")) {
        int fd = shm_open(name, O_RDONLY, 0);
        return answer(fd >= 0 && fchmod(fd, (mode_t)strtol(argv[3], NULL, 8)) == 0);
    }
    if (!strcmp(what, "stat")) {
        int fd = shm_open(name, O_RDONLY, 0);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) return answer(0);
        printf("%u %o\n", st.st_uid, st.st_mode & 07777);
        return 0;
    }
    return 2;
}
