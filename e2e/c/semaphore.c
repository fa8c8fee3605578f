/* A bounded buffer guarded by unnamed POSIX semaphores in a shared segment (sem_init with
 * pshared = 1), as C programs have written it for decades: `empty` and `full` count slots and
 * a binary semaphore is the lock. Role 0 produces ITEMS numbers; the others consume them.
 * usage: semaphore NAME ROLE NPROCS ITEMS */
#include "common.h"
#include <errno.h>
#include <semaphore.h>
#include <string.h>
#include <time.h>

#define SLOTS 8

struct shared {
    long ready;
    sem_t empty, full, lock, done, idle;
    long ring[SLOTS];
    long in, out, sum, taken;
};

int main(int argc, char **argv) {
    int role = atoi(argv[2]), nprocs = atoi(argv[3]);
    long items = atol(argv[4]);
    struct shared *s = open_segment(argv[1], role, sizeof(struct shared));
    if (role == 0) {
        if (sem_init(&s->empty, 1, SLOTS) || sem_init(&s->full, 1, 0) || sem_init(&s->lock, 1, 1) ||
            sem_init(&s->done, 1, 0) || sem_init(&s->idle, 1, 0)) { perror("sem_init"); return 1; }
        __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
        /* Nobody posts `idle`: trywait and timedwait must report so. */
        int busy = sem_trywait(&s->idle) == -1 && errno == EAGAIN;
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += 100 * 1000 * 1000;
        if (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
        int timed = sem_timedwait(&s->idle, &t) == -1 && errno == ETIMEDOUT;
        for (long i = 1; i <= items + nprocs - 1; i++) {
            sem_wait(&s->empty);
            sem_wait(&s->lock);
            s->ring[s->in++ % SLOTS] = i <= items ? i : 0; /* 0: stop */
            sem_post(&s->lock);
            sem_post(&s->full);
        }
        for (int c = 1; c < nprocs; c++) sem_wait(&s->done);
        int value = -1;
        sem_getvalue(&s->empty, &value);
        printf("trywait %s, timedwait %s; consumers took %ld items summing to %ld (want %ld); %d slots free\n",
               busy ? "EAGAIN" : "wrong", timed ? "ETIMEDOUT" : "wrong", s->taken, s->sum,
               items * (items + 1) / 2, value);
        return !(busy && timed && s->taken == items && s->sum == items * (items + 1) / 2 && value == SLOTS);
    }
    while (!__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE)) usleep(1000);
    for (;;) {
        sem_wait(&s->full);
        sem_wait(&s->lock);
        long v = s->ring[s->out++ % SLOTS];
        if (v) { s->sum += v; s->taken++; }
        sem_post(&s->lock);
        sem_post(&s->empty);
        if (!v) break;
    }
    sem_post(&s->done);
    return 0;
}
