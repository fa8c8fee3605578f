/* POSIX shared memory semantics a program relies on, through every name libc exports. */
#define _LARGEFILE64_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(cond) do { if (!(cond)) { printf("FAIL line %d: %s (errno %d)\n", __LINE__, #cond, errno); failures++; } } while (0)

int main(int argc, char **argv) {
    const char *name = argv[1];
    size_t size = 10 * 4096 + 100;
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0640);
    CHECK(fd >= 0);
    CHECK(shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0640) < 0 && errno == EEXIST);
    CHECK(ftruncate64(fd, size) == 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == (off_t)size);
    struct stat64 st64;
    CHECK(fstat64(fd, &st64) == 0 && st64.st_size == (off64_t)size);

    char *a = mmap64(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(a != MAP_FAILED);
    strcpy(a + 4096 * 9, "tail");
    /* The same segment mapped again is a second mapping at another address (as POSIX gives),
     * of the same memory; unmapping it leaves the first. */
    char *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(b != MAP_FAILED && b != a && strcmp(b + 4096 * 9, "tail") == 0);
    CHECK(munmap(b, size) == 0);
    CHECK(strcmp(a + 4096 * 9, "tail") == 0);

    /* A descriptor from dup() and one from a second shm_open are the same segment. */
    int fd2 = dup(fd);
    int fd3 = shm_open(name, O_RDWR, 0);
    CHECK(fd3 >= 0);
    char *c = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd3, 4096 * 9);
    CHECK(c != MAP_FAILED && c != a + 4096 * 9 && strcmp(c, "tail") == 0);
    CHECK(munmap(c, 4096) == 0);
    CHECK(ftruncate(fd2, size) == 0);

    /* Read-only opens refuse writable mappings and resizing, as /dev/shm does. */
    int ro = shm_open(name, O_RDONLY, 0);
    CHECK(ro >= 0);
    CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED && errno == EACCES);
    CHECK(ftruncate(ro, 4096) < 0);
    /* MAP_PRIVATE and a conflicting fixed address are refused with an errno. */
    CHECK(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED && errno == EINVAL);
    CHECK(mmap((void *)0x10000000, 4096, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED);
    /* A fixed mapping at the segment's own address is fine. */
    CHECK(mmap(a, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == a);

    /* mprotect by the program is honoured: a read-only page is readable... */
    CHECK(mprotect(a, 4096, PROT_READ) == 0);
    CHECK(a[0] == 0);
    CHECK(mprotect(a, 4096, PROT_READ | PROT_WRITE) == 0);
    a[0] = 'x';
    CHECK(a[0] == 'x');

    /* Partial munmap keeps the rest. */
    CHECK(munmap(a, 4096) == 0);
    CHECK(strcmp(a + 4096 * 9, "tail") == 0);
    CHECK(munmap(a + 4096, size - 4096) == 0);

    CHECK(shm_unlink(name) == 0);
    CHECK(shm_open(name, O_RDWR, 0) < 0 && errno == ENOENT);
    CHECK(shm_unlink(name) < 0 && errno == ENOENT);
    CHECK(shm_open("/bad/name", O_CREAT | O_RDWR, 0600) < 0 && errno == EINVAL);

    /* The self-cleaning idiom: unlink at once, then size, map and use the descriptor. */
    int anon = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(anon >= 0);
    CHECK(shm_unlink(name) == 0);
    CHECK(ftruncate(anon, 3 * 4096) == 0);
    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, anon, 0);
    CHECK(p != MAP_FAILED);
    if (p != MAP_FAILED) {
        strcpy(p + 4096, "still here");
        CHECK(strcmp(p + 4096, "still here") == 0);
        CHECK(munmap(p, 3 * 4096) == 0);
    }
    CHECK(shm_open(name, O_RDWR, 0) < 0 && errno == ENOENT);
    close(anon);
    close(fd); close(fd2); close(fd3); close(ro);
    printf("%d failures\n", failures);
    return failures != 0;
}
