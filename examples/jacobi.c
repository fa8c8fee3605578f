/* Jacobi iteration on an N x N grid (the workload of Li & Hudak's evaluation): each process
 * sweeps a band of rows, dsm_barrier between sweeps. Role 0 then repeats the computation alone
 * in private memory and checks the shared result bit for bit.
 * usage: jacobi NAME ROLE PROCESSES [N] [SWEEPS] */
#include "parallel.h"

static void sweep(const double *from, double *to, int n, int lo, int hi) {
    for (int i = lo; i < hi; i++) {
        if (i == 0 || i == n - 1) continue;
        for (int j = 1; j < n - 1; j++)
            to[i * n + j] = 0.25 * (from[(i - 1) * n + j] + from[(i + 1) * n + j] +
                                    from[i * n + j - 1] + from[i * n + j + 1]);
    }
}

static void boundary(double *g, int n) {
    memset(g, 0, sizeof(double) * n * n);
    for (int j = 0; j < n; j++) g[j] = 100.0;           /* hot top edge */
    for (int i = 0; i < n; i++) g[i * n] = 50.0;        /* warm left edge */
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: jacobi NAME ROLE PROCESSES [N] [SWEEPS]\n"); return 2; }
    need_dsm("jacobi");
    int role = atoi(argv[2]), procs = atoi(argv[3]);
    int n = argc > 4 ? atoi(argv[4]) : 256, sweeps = argc > 5 ? atoi(argv[5]) : 50;
    size_t bytes = sizeof(double) * n * n;
    double *grid[2];
    char *seg = open_segment(argv[1], role, 2 * bytes + 4096);
    grid[0] = (double *)seg;
    grid[1] = (double *)(seg + bytes);
    char barrier[256];
    snprintf(barrier, sizeof barrier, "%s/start", argv[1]);
    if (role == 0) { boundary(grid[0], n); boundary(grid[1], n); }
    dsm_barrier(barrier, procs);

    start_clock();
    int lo = n * role / procs, hi = n * (role + 1) / procs;
    snprintf(barrier, sizeof barrier, "%s/sweep", argv[1]);
    for (int s = 0; s < sweeps; s++) {
        sweep(grid[s % 2], grid[(s + 1) % 2], n, lo, hi);
        dsm_barrier(barrier, procs);
    }
    report("jacobi", role);

    if (role != 0) return 0;
    double *mine[2] = {malloc(bytes), malloc(bytes)};
    boundary(mine[0], n);
    boundary(mine[1], n);
    for (int s = 0; s < sweeps; s++) sweep(mine[s % 2], mine[(s + 1) % 2], n, 0, n);
    long differ = 0;
    for (long k = 0; k < (long)n * n; k++) differ += mine[sweeps % 2][k] != grid[sweeps % 2][k];
    printf("jacobi: %dx%d grid, %d sweeps on %d processes: %ld cells differ from the sequential run\n",
           n, n, sweeps, procs, differ);
    shm_unlink(argv[1]);
    return differ != 0;
}
