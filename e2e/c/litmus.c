/* Litmus tests across processes (hosts), many iterations; counts every outcome and fails if
 * one forbidden under x86-TSO appears. Each variable lives on its own page.
 *   sb   P0: x=1; mfence; r0=y      P1: y=1; mfence; r1=x     forbidden: r0=0 && r1=0
 *   mp   P0: x=1; y=1               P1: r0=y; r1=x            forbidden: r0=1 && r1=0
 *   iriw P0: x=1   P1: y=1   P2: r0=x; r1=y   P3: r2=y; r3=x  forbidden: r0=1,r1=0,r2=1,r3=0
 * usage: litmus TEST NAME ROLE ITERS   (sb and mp take 2 processes, iriw 4) */
#include "common.h"
#include <string.h>

#define PAGE 4096
struct control { struct barrier go, reset; };

int main(int argc, char **argv) {
    const char *test = argv[1];
    int role = atoi(argv[3]);
    long iters = atol(argv[4]);
    long nprocs = strcmp(test, "iriw") == 0 ? 4 : 2;
    size_t result_pages = (iters * 4 * sizeof(int) + PAGE - 1) / PAGE;
    size_t size = PAGE * (3 + nprocs * result_pages);
    char *mem = open_segment(argv[2], role, size);
    struct control *c = (struct control *)mem;
    volatile int *x = (int *)(mem + PAGE), *y = (int *)(mem + 2 * PAGE);
    int *results = (int *)(mem + 3 * PAGE);
    int *mine = results + role * result_pages * PAGE / sizeof(int);
    for (long it = 0; it < iters; it++) {
        if (role == 0) { *x = 0; *y = 0; }
        barrier_wait(&c->reset, nprocs);
        int *r = mine + it * 4;
        if (!strcmp(test, "sb")) {
            if (role == 0) { *x = 1; __atomic_thread_fence(__ATOMIC_SEQ_CST); r[0] = *y; }
            else { *y = 1; __atomic_thread_fence(__ATOMIC_SEQ_CST); r[0] = *x; }
        } else if (!strcmp(test, "mp")) {
            if (role == 0) { *x = 1; *y = 1; }
            else { r[0] = *y; r[1] = *x; }
        } else {
            if (role == 0) *x = 1;
            else if (role == 1) *y = 1;
            else if (role == 2) { r[0] = *x; r[1] = *y; }
            else { r[0] = *y; r[1] = *x; }
        }
        barrier_wait(&c->go, nprocs);
    }
    if (role != 0) return 0;
    long outcomes[16] = {0}, forbidden = 0;
    for (long it = 0; it < iters; it++) {
        int *p[4];
        for (int q = 0; q < nprocs; q++) p[q] = results + q * result_pages * PAGE / sizeof(int) + it * 4;
        int bad, o;
        if (!strcmp(test, "sb")) { o = p[0][0] * 2 + p[1][0]; bad = p[0][0] == 0 && p[1][0] == 0; }
        else if (!strcmp(test, "mp")) { o = p[1][0] * 2 + p[1][1]; bad = p[1][0] == 1 && p[1][1] == 0; }
        else { o = p[2][0] * 8 + p[2][1] * 4 + p[3][0] * 2 + p[3][1];
               bad = p[2][0] == 1 && p[2][1] == 0 && p[3][0] == 1 && p[3][1] == 0; }
        outcomes[o]++;
        forbidden += bad;
    }
    printf("%s: %ld iterations, forbidden %ld, outcomes:", test, iters, forbidden);
    for (int o = 0; o < 16; o++) if (outcomes[o]) printf(" %d=%ld", o, outcomes[o]);
    printf("\n");
    return forbidden != 0;
}
