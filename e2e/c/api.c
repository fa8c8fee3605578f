/* The explicit API of dsm.h: node id and count, a named barrier, a numbered lock around a
 * non-atomic update, and the shared allocator. Built two ways by the tests: linked against
 * libdsm.so, and with -DDSM_WEAK to run under LD_PRELOAD.
 * usage: api NAME ROLE NPROCS ITERS */
#include <dsm.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct header { long counter; long serials; long *slots; };

int main(int argc, char **argv) {
    if (!DSM_AVAILABLE()) { printf("libdsm.so is not loaded\n"); return 3; }
    int role = atoi(argv[2]);
    unsigned nprocs = atoi(argv[3]);
    long iters = atol(argv[4]);
    size_t size = 1 << 20;
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, size) < 0) { perror("segment"); return 1; }
    char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { perror("mmap"); return 1; }
    char start[300];
    snprintf(start, sizeof start, "%s/start", argv[1]);
    struct header *h = (struct header *)base;
    if (role == 0) {
        if (dsm_alloc(base, sizeof *h) != base) { perror("dsm_alloc"); return 1; }
        h->slots = dsm_alloc(base, nprocs * sizeof(long));
        if (!h->slots) { perror("dsm_alloc"); return 1; }
        errno = 0;
        if (dsm_alloc(base, size) != NULL || errno != ENOMEM) { printf("oversized dsm_alloc did not fail\n"); return 1; }
    }
    int serial = dsm_barrier(start, nprocs);
    if (serial < 0) { perror("dsm_barrier"); return 1; }
    if (serial) __atomic_add_fetch(&h->serials, 1, __ATOMIC_SEQ_CST);
    h->slots[role] = dsm_node_id();
    for (long i = 0; i < iters; i++) {
        if (dsm_lock(7) != 0) { perror("dsm_lock"); return 1; }
        long v = *(volatile long *)&h->counter;
        *(volatile long *)&h->counter = v + 1;
        if (dsm_unlock(7) != 0) { perror("dsm_unlock"); return 1; }
    }
    snprintf(start, sizeof start, "%s/done", argv[1]);
    dsm_barrier(start, nprocs);
    struct dsm_counters c;
    if (dsm_counters(&c) != 0) { perror("dsm_counters"); return 1; }
    printf("role %d on node %d of %d: counter %ld (want %ld), %ld serial, slot %ld, %llu lock requests\n",
           role, dsm_node_id(), dsm_node_count(), h->counter, iters * nprocs, h->serials,
           h->slots[role], (unsigned long long)c.sync_requests);
    return !(h->counter == iters * (long)nprocs && h->serials == 1 && h->slots[role] == dsm_node_id());
}
