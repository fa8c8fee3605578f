/* A work queue in shared memory, protected by a process-shared pthread mutex and two condition
 * variables, written as for one host: role 0 produces ITEMS numbered work items into a ring,
 * the other roles consume them. Every item must be consumed exactly once.
 * usage: workqueue NAME ROLE PROCESSES [ITEMS] */
#include "parallel.h"

#include <pthread.h>

#define RING 64
#define MAX_ITEMS 100000

struct queue {
    long ready;
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    pthread_barrier_t done;
    long head, tail;          /* items are taken at head, put at tail */
    long ring[RING];
    long taken_by[MAX_ITEMS];   /* role + 1 of the consumer, per item */
    long consumed[64];          /* per role */
};

static void put(struct queue *q, long item) {
    pthread_mutex_lock(&q->lock);
    while (q->tail - q->head == RING) pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[q->tail % RING] = item;
    q->tail++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static long take(struct queue *q) {
    pthread_mutex_lock(&q->lock);
    while (q->tail == q->head) pthread_cond_wait(&q->not_empty, &q->lock);
    long item = q->ring[q->head % RING];
    q->head++;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    return item;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: workqueue NAME ROLE PROCESSES [ITEMS]\n"); return 2; }
    int role = atoi(argv[2]), procs = atoi(argv[3]);
    long items = argc > 4 ? atol(argv[4]) : 2000;
    if (items > MAX_ITEMS || procs < 2 || procs > 64) { fprintf(stderr, "workqueue: bad sizes\n"); return 2; }
    struct queue *q = open_segment(argv[1], role, sizeof(struct queue));
    if (role == 0) {
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&q->lock, &ma);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_cond_init(&q->not_empty, &ca);
        pthread_cond_init(&q->not_full, &ca);
        pthread_barrierattr_t ba;
        pthread_barrierattr_init(&ba);
        pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
        pthread_barrier_init(&q->done, &ba, procs);
        __atomic_store_n(&q->ready, 1, __ATOMIC_RELEASE);
    } else {
        while (!__atomic_load_n(&q->ready, __ATOMIC_ACQUIRE)) usleep(1000);
    }

    start_clock();
    if (role == 0) {
        for (long i = 0; i < items; i++) put(q, i);
        for (int c = 1; c < procs; c++) put(q, -1); /* one stop sign per consumer */
    } else {
        for (;;) {
            long item = take(q);
            if (item < 0) break;
            q->taken_by[item] = role + 1; /* each item's slot is written by its one consumer */
            q->consumed[role]++;
        }
    }
    pthread_barrier_wait(&q->done);
    report("workqueue", role);
    if (role != 0) return 0;

    long missing = 0, total = 0;
    for (long i = 0; i < items; i++) missing += q->taken_by[i] == 0;
    for (int c = 1; c < procs; c++) {
        printf("workqueue: consumer %d took %ld items\n", c, q->consumed[c]);
        total += q->consumed[c];
    }
    printf("workqueue: %ld items, %ld consumed, %ld never consumed\n", items, total, missing);
    shm_unlink(argv[1]);
    return !(missing == 0 && total == items);
}
