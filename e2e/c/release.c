/* Writes the pattern check.c checks into every page of a new segment of PAGES pages while
 * holding a process-shared mutex (in a second segment, NAME.lock), unlocks it — a release
 * point — says "released", then waits to be killed. With "msync", no mutex: msync(MS_SYNC)
 * is the release point; with "async", msync(MS_ASYNC) starts it and returns at once. With a fourth argument, it says "attached" once its segments are open
 * and writes only after a line on stdin.  usage: release NAME PAGES [msync|mutex] [stdin] */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *map(const char *name, size_t size) {
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); exit(1); }
    if (ftruncate(fd, size) < 0) { perror("ftruncate"); exit(1); }
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); exit(1); }
    return mem;
}

int main(int argc, char **argv) {
    size_t size = strtoul(argv[2], NULL, 0) * 4096;
    char lock_name[256];
    snprintf(lock_name, sizeof lock_name, "%s.lock", argv[1]);
    pthread_mutex_t *m = map(lock_name, 4096);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(m, &a);
    unsigned *mem = map(argv[1], size);
    int by_msync = argc > 3 && (!strcmp(argv[3], "msync") || !strcmp(argv[3], "async"));
    int flags = argc > 3 && !strcmp(argv[3], "async") ? MS_ASYNC : MS_SYNC;
    if (argc > 4) {
        printf("attached\n");
        fflush(stdout);
        if (getchar() == EOF) return 1;
    }
    if (!by_msync) pthread_mutex_lock(m);
    for (size_t i = 0; i < size / sizeof *mem; i++) mem[i] = (unsigned)(i * 2654435761u);
    if (by_msync) {
        if (msync(mem, size, flags)) { perror("msync"); return 1; }
    } else {
        pthread_mutex_unlock(m);
    }
    printf("released\n");
    fflush(stdout);
    for (;;) pause();
}
