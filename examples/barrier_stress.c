/* Many rounds of one process-shared pthread barrier, THREADS threads in each of PROCESSES
 * processes. Before each round a thread counts itself in; after it, every thread checks that
 * everybody of that round arrived, and one serial thread per round counts the round.
 * usage: barrier_stress NAME ROLE PROCESSES [ROUNDS] [THREADS] */
#include "parallel.h"

#include <pthread.h>

#define MAX_ROUNDS 20000

struct shared {
    long ready;
    pthread_barrier_t barrier;
    long arrived[MAX_ROUNDS];
    long serial[MAX_ROUNDS];
};

static struct shared *s;
static long rounds, total;
static long bad;

static void *run(void *arg) {
    (void)arg;
    /* One round more than counted: after it, every serial thread has counted its round. */
    for (long r = 0; r <= rounds; r++) {
        if (r < rounds) __atomic_add_fetch(&s->arrived[r], 1, __ATOMIC_SEQ_CST);
        int rc = pthread_barrier_wait(&s->barrier);
        if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD) {
            fprintf(stderr, "pthread_barrier_wait: %s\n", strerror(rc));
            exit(1);
        }
        if (r == rounds) break;
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD) __atomic_add_fetch(&s->serial[r], 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s->arrived[r], __ATOMIC_SEQ_CST) != total) __atomic_add_fetch(&bad, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: barrier_stress NAME ROLE PROCESSES [ROUNDS] [THREADS]\n"); return 2; }
    int role = atoi(argv[2]), procs = atoi(argv[3]);
    rounds = argc > 4 ? atol(argv[4]) : 500;
    int threads = argc > 5 ? atoi(argv[5]) : 2;
    if (rounds > MAX_ROUNDS - 1 || threads < 1 || threads > 64) { fprintf(stderr, "barrier_stress: bad sizes\n"); return 2; }
    total = (long)procs * threads;
    s = open_segment(argv[1], role, sizeof(struct shared));
    if (role == 0) {
        pthread_barrierattr_t ba;
        pthread_barrierattr_init(&ba);
        pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
        pthread_barrier_init(&s->barrier, &ba, total);
        __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
    } else {
        while (!__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE)) usleep(1000);
    }

    start_clock();
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, run, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    report("barrier_stress", role);

    long skipped = 0;
    for (long r = 0; r < rounds; r++) skipped += s->serial[r] != 1;
    printf("barrier_stress role %d: %ld rounds x %ld threads, %ld early releases, %ld rounds without "
           "exactly one serial thread\n", role, rounds, total, bad, skipped);
    if (role == 0) shm_unlink(argv[1]);
    return !(bad == 0 && skipped == 0);
}
