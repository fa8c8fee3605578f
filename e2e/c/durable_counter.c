/* Adds one to a counter under a robust process-shared mutex ITERS times, recording after each
 * unlock returned how many have (LOG: the count as text, rewritten in place), so that a test
 * can tell what a process that died had released. Role 0 makes the segment; the others wait
 * for it. A lock that finds its holder dead (EOWNERDEAD: its host died) marks the mutex
 * consistent and goes on.  usage: durable_counter NAME ROLE ITERS LOG
 *                            durable_counter NAME read   (prints the counter) */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int make = argc > 4 && atoi(argv[2]) == 0;
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 500; tries++) {
        fd = shm_open(argv[1], O_RDWR | (make ? O_CREAT : 0), 0600);
        if (fd < 0) usleep(10000);
    }
    if (fd < 0) { perror("shm_open"); return 1; }
    if (make && ftruncate(fd, 2 * 4096) < 0) { perror("ftruncate"); return 1; }
    char *m = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    pthread_mutex_t *mutex = (pthread_mutex_t *)m;
    volatile uint64_t *counter = (uint64_t *)(m + 4096);
    volatile uint32_t *ready = (uint32_t *)(m + 4096 + 64);
    if (!strcmp(argv[2], "read")) {
        printf("counter %llu\n", (unsigned long long)*counter);
        return 0;
    }
    if (make) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(mutex, &a);
        *ready = 1;
        msync(m, 2 * 4096, MS_SYNC);
    }
    while (!*ready) usleep(1000);
    long iters = atol(argv[3]);
    FILE *log = fopen(argv[4], "w");
    if (!log) { perror(argv[4]); return 1; }
    long done = 0;
    for (long i = 0; i < iters; i++) {
        int r = pthread_mutex_lock(mutex);
        if (r == EOWNERDEAD) {
            pthread_mutex_consistent(mutex);
        } else if (r) {
            fprintf(stderr, "pthread_mutex_lock: %s\n", strerror(r));
            return 1;
        }
        (*counter)++;
        if ((r = pthread_mutex_unlock(mutex))) {
            fprintf(stderr, "pthread_mutex_unlock: %s\n", strerror(r));
            return 1;
        }
        done++;
        rewind(log);
        fprintf(log, "%ld\n", done);
        fflush(log);
    }
    printf("did %ld\n", done);
    return 0;
}
