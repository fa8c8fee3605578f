/* A page written in turn by every process: each fills the whole page for its turn after
 * checking it holds exactly what the previous turn wrote.
 * usage: pingpong NAME ROLE NPROCS ROUNDS */
#include "common.h"

struct header { struct barrier start; long turn; };

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long nprocs = atol(argv[3]), rounds = atol(argv[4]);
    struct header *h = open_segment(argv[1], role, 2 * 4096);
    long *page = (long *)((char *)h + 4096);
    const long words = 4096 / sizeof(long);
    barrier_wait(&h->start, nprocs);
    for (long turn = role; turn < rounds * nprocs; turn += nprocs) {
        while (__atomic_load_n(&h->turn, __ATOMIC_ACQUIRE) != turn) sched_yield();
        for (long i = 0; i < words; i++) {
            long want = turn == 0 ? 0 : (turn - 1) * 1000003 + i;
            if (page[i] != want) {
                printf("role %d turn %ld: word %ld is %ld, want %ld\n", role, turn, i, page[i], want);
                return 1;
            }
        }
        for (long i = 0; i < words; i++) page[i] = turn * 1000003 + i;
        __atomic_store_n(&h->turn, turn + 1, __ATOMIC_RELEASE);
    }
    printf("role %d: %ld turns checked\n", role, rounds);
    return 0;
}
