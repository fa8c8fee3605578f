/* Helpers the multi-process test programs share: open-or-wait for a segment, and a barrier
 * in shared memory built from atomics (what shared-memory programs do without pthreads). */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Role 0 creates the segment; the others wait until it exists with its full size. */
__attribute__((unused)) static void *open_segment(const char *name, int role, size_t size) {
    int fd = -1;
    if (role == 0) {
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, size) < 0) { perror("create"); exit(1); }
    } else {
        for (int i = 0; i < 4000; i++) {
            fd = shm_open(name, O_RDWR, 0);
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size >= size) break;
            if (fd >= 0) close(fd);
            fd = -1;
            usleep(5000);
        }
        if (fd < 0) { perror("open"); exit(1); }
    }
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); exit(1); }
    close(fd);
    return mem;
}

struct barrier { long count; long generation; };

__attribute__((unused)) static void barrier_wait(struct barrier *b, long n) {
    long gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, gen + 1, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == gen) sched_yield();
    }
}
