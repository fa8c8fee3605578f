/* Several threads fault different and the same pages at once. Each thread fills its own
 * pages and adds to shared counters on one page with atomics; after a barrier every thread
 * checks every other thread's pages. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 8
#define PAGES_PER_THREAD 64
#define ADDS 20000
#define WORDS (4096 / sizeof(long))

static long *mem;
static pthread_barrier_t barrier;
static int failures;

static void *work(void *arg) {
    long t = (long)arg;
    long *mine = mem + WORDS * (1 + t * PAGES_PER_THREAD);
    /* Interleave: touch own pages and hammer the shared page. */
    for (long i = 0; i < PAGES_PER_THREAD * WORDS; i++) {
        mine[i] = t * 1000000 + i;
        if (i % 8 == 0) __atomic_fetch_add(&mem[t % 4], 1, __ATOMIC_SEQ_CST);
    }
    for (long i = 0; i < ADDS; i++) __atomic_fetch_add(&mem[4], 1, __ATOMIC_SEQ_CST);
    pthread_barrier_wait(&barrier);
    for (long o = 0; o < THREADS; o++) {
        long *theirs = mem + WORDS * (1 + o * PAGES_PER_THREAD);
        for (long i = 0; i < PAGES_PER_THREAD * WORDS; i += 97)
            if (theirs[i] != o * 1000000 + i) __atomic_fetch_add(&failures, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

int main(int argc, char **argv) {
    size_t size = 4096 * (1 + THREADS * PAGES_PER_THREAD);
    int fd = shm_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    if (ftruncate(fd, size) < 0) { perror("ftruncate"); return 1; }
    mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, work, (void *)t);
    for (long t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    long per_slot = 0;
    for (int s = 0; s < 4; s++) per_slot += mem[s];
    long expect_slots = (long)THREADS * PAGES_PER_THREAD * WORDS / 8;
    printf("counter %ld (want %d), slots %ld (want %ld), failures %d\n", mem[4], THREADS * ADDS,
           per_slot, expect_slots, failures);
    shm_unlink(argv[1]);
    return mem[4] == THREADS * ADDS && per_slot == expect_slots && failures == 0 ? 0 : 1;
}
