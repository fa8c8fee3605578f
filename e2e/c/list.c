/* A linked list built by processes on different hosts: each pushes ITEMS nodes onto one
 * lock-free list, every node pointing at memory another process (host) wrote. Then every
 * process walks the whole list and checks each (role, i) appears exactly once.
 * usage: list NAME ROLE NPROCS ITEMS */
#include "common.h"

struct item { struct item *next; long role, index; char pad[4096 - 3 * sizeof(long)]; };
struct header { struct barrier start, done; struct item *head; long next_slot; };

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long nprocs = atol(argv[3]), items = atol(argv[4]);
    size_t size = 4096 * (1 + nprocs * items);
    struct header *h = open_segment(argv[1], role, size);
    struct item *slots = (struct item *)((char *)h + 4096);   /* one item per page */
    barrier_wait(&h->start, nprocs);
    for (long i = 0; i < items; i++) {
        long slot = __atomic_fetch_add(&h->next_slot, 1, __ATOMIC_RELAXED);
        struct item *it = &slots[slot];
        it->role = role;
        it->index = i;
        struct item *old = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        do it->next = old;
        while (!__atomic_compare_exchange_n(&h->head, &old, it, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE));
    }
    barrier_wait(&h->done, nprocs);
    char *seen = calloc(nprocs * items, 1);
    long count = 0, bad = 0;
    for (struct item *it = h->head; it; it = it->next) {
        if (it->role < 0 || it->role >= nprocs || it->index < 0 || it->index >= items) { bad++; break; }
        if (seen[it->role * items + it->index]++) bad++;
        count++;
    }
    printf("role %d walked %ld items, %ld bad\n", role, count, bad);
    return count == nprocs * items && bad == 0 ? 0 : 1;
}
