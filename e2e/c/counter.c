/* Every process adds ADDS to one counter with __atomic_fetch_add; the total must be exact.
 * usage: counter NAME ROLE NPROCS ADDS */
#include "common.h"

struct header { struct barrier start, done; long counter; };

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long nprocs = atol(argv[3]), adds = atol(argv[4]);
    struct header *h = open_segment(argv[1], role, 4096);
    barrier_wait(&h->start, nprocs);
    for (long i = 0; i < adds; i++) __atomic_fetch_add(&h->counter, 1, __ATOMIC_SEQ_CST);
    barrier_wait(&h->done, nprocs);
    long total = __atomic_load_n(&h->counter, __ATOMIC_SEQ_CST);
    printf("role %d sees %ld (want %ld)\n", role, total, nprocs * adds);
    return total == nprocs * adds ? 0 : 1;
}
