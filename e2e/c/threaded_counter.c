/* Several threads in each of several processes (on several hosts) add to one counter with an
 * atomic instruction, and each thread also writes its own slot on a page of its own, read back
 * at the end. Fault handlers of many threads race the process's revocations while the counter's
 * page moves between hosts.
 * usage: threaded_counter NAME ROLE NPROCS THREADS ADDS */
#include "common.h"
#include <pthread.h>

struct header { struct barrier start, done; long counter; };
static struct header *h;
static long adds, threads;
static int role;
static char *base;

static void *work(void *arg) {
    long t = (long)arg;
    long *mine = (long *)(base + 4096 * (1 + role * threads + t));
    for (long i = 0; i < adds; i++) {
        __atomic_fetch_add(&h->counter, 1, __ATOMIC_SEQ_CST);
        mine[i % 512] = i;
    }
    return NULL;
}

int main(int argc, char **argv) {
    role = atoi(argv[2]);
    long nprocs = atol(argv[3]);
    threads = atol(argv[4]);
    adds = atol(argv[5]);
    base = open_segment(argv[1], role, 4096 * (1 + nprocs * threads));
    h = (struct header *)base;
    barrier_wait(&h->start, nprocs);
    pthread_t th[64];
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, work, (void *)t);
    for (long t = 0; t < threads; t++) pthread_join(th[t], NULL);
    barrier_wait(&h->done, nprocs);
    long bad = 0;
    for (long r = 0; r < nprocs; r++)
        for (long t = 0; t < threads; t++) {
            long *slot = (long *)(base + 4096 * (1 + r * threads + t));
            if (slot[(adds - 1) % 512] != adds - 1) bad++;
        }
    long total = __atomic_load_n(&h->counter, __ATOMIC_SEQ_CST);
    printf("role %d sees %ld (want %ld), %ld bad slots\n", role, total, nprocs * threads * adds, bad);
    return total == nprocs * threads * adds && bad == 0 ? 0 : 1;
}
