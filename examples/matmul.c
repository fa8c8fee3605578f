/* Matrix multiply C = A x B, one band of C's rows per process. Role 0 allocates the matrices
 * with dsm_alloc (so every node has them at the same address), fills A and B, and after the
 * parallel run checks C against a sequential multiply.
 * usage: matmul NAME ROLE PROCESSES [N] */
#include "parallel.h"

struct header { double *a, *b, *c; int n; };

static void multiply(const double *a, const double *b, double *c, int n, int lo, int hi) {
    for (int i = lo; i < hi; i++)
        for (int j = 0; j < n; j++) {
            double sum = 0;
            for (int k = 0; k < n; k++) sum += a[i * n + k] * b[k * n + j];
            c[i * n + j] = sum;
        }
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: matmul NAME ROLE PROCESSES [N]\n"); return 2; }
    need_dsm("matmul");
    int role = atoi(argv[2]), procs = atoi(argv[3]);
    int n = argc > 4 ? atoi(argv[4]) : 192;
    size_t bytes = sizeof(double) * n * n;
    char *seg = open_segment(argv[1], role, 3 * bytes + 3 * 4096);
    struct header *h = (struct header *)seg;
    char barrier[256];
    snprintf(barrier, sizeof barrier, "%s/ready", argv[1]);
    if (role == 0) {
        /* The first allocation is the header at the segment's start: others find it there. */
        if (dsm_alloc(seg, sizeof *h) != h) { perror("dsm_alloc header"); return 1; }
        /* Page-sized padding keeps the header's page apart from B, which every node reads. */
        dsm_alloc(seg, 4096 - sizeof *h);
        h->a = dsm_alloc(seg, bytes);
        h->b = dsm_alloc(seg, bytes);
        h->c = dsm_alloc(seg, bytes);
        if (!h->a || !h->b || !h->c) { perror("dsm_alloc"); return 1; }
        h->n = n;
        for (int k = 0; k < n * n; k++) {
            h->a[k] = (k % 7) - 3;
            h->b[k] = (k % 5) - 2;
        }
    }
    dsm_barrier(barrier, procs);

    start_clock();
    multiply(h->a, h->b, h->c, n, n * role / procs, n * (role + 1) / procs);
    snprintf(barrier, sizeof barrier, "%s/done", argv[1]);
    dsm_barrier(barrier, procs);
    report("matmul", role);

    if (role != 0) return 0;
    double *c = malloc(bytes);
    multiply(h->a, h->b, c, n, 0, n);
    long differ = 0;
    for (int k = 0; k < n * n; k++) differ += c[k] != h->c[k];
    printf("matmul: %dx%d on %d processes: %ld entries differ from the sequential multiply\n", n, n,
           procs, differ);
    shm_unlink(argv[1]);
    return differ != 0;
}
