/* A semaphore whose home dies: role 0 makes the segment (so its node is the semaphore's home)
 * and then only waits to be killed; role 1 posts COUNT times; role 2 takes COUNT times, saying
 * "halfway" when it took half, and at the end checks that nothing is left over (a post counted
 * twice) — a post lost would leave it waiting.  usage: durable_sem NAME ROLE COUNT */
#include "common.h"
#include <errno.h>
#include <semaphore.h>
#include <string.h>

struct shared {
    long ready;
    sem_t items;
};

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long count = atol(argv[3]);
    struct shared *s = open_segment(argv[1], role, sizeof(struct shared));
    if (role == 0) {
        if (sem_init(&s->items, 1, 0)) { perror("sem_init"); return 1; }
        __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
        msync(s, sizeof *s, MS_SYNC);
        printf("ready\n");
        fflush(stdout);
        for (;;) pause();
    }
    while (!__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE)) usleep(1000);
    for (long i = 0; i < count; i++) {
        if (role == 1) {
            if (sem_post(&s->items)) { perror("sem_post"); return 1; }
            usleep(2000);
        } else {
            while (sem_wait(&s->items)) {
                if (errno != EINTR) { perror("sem_wait"); return 1; }
            }
            if (i + 1 == count / 2) {
                printf("halfway\n");
                fflush(stdout);
            }
        }
    }
    if (role == 1) {
        printf("posted %ld\n", count);
        return 0;
    }
    int extra = sem_trywait(&s->items) == 0;
    printf("took %ld, %s\n", count, extra ? "and one more: a post counted twice" : "none left");
    return extra;
}
