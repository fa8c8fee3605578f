/* What the parallel examples share: a segment every process opens (role 0 creates it), the
 * time, and the node's dsm counters around the run, so each example can print what its
 * synchronization and sharing cost. Works under LD_PRELOAD=libdsm.so without linking it. */
#define DSM_WEAK
#include "../shim/include/dsm.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Role 0 creates the segment; the others wait until it exists with its full size. */
static void *open_segment(const char *name, int role, size_t size) {
    int fd = -1;
    if (role == 0) {
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0 || ftruncate(fd, size) < 0) { perror("create segment"); exit(1); }
    } else {
        for (int i = 0; i < 6000; i++) {
            struct stat st;
            fd = shm_open(name, O_RDWR, 0);
            if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size >= size) break;
            if (fd >= 0) close(fd);
            fd = -1;
            usleep(5000);
        }
        if (fd < 0) { perror("open segment"); exit(1); }
    }
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); exit(1); }
    close(fd);
    return mem;
}

__attribute__((unused)) static void need_dsm(const char *program) {
    if (!DSM_AVAILABLE()) {
        fprintf(stderr, "%s: run under LD_PRELOAD=libdsm.so (see README.md)\n", program);
        exit(2);
    }
}

static struct dsm_counters counters_before;
static double started;

static void start_clock(void) {
    if (DSM_AVAILABLE()) dsm_counters(&counters_before);
    started = now();
}

/* One line: what the run took, and what this node's daemon did for it. */
static void report(const char *program, int role) {
    double took = now() - started;
    struct dsm_counters c = {0};
    if (DSM_AVAILABLE()) dsm_counters(&c);
    printf("%s role %d (node %d): %.3f s, node faults %llu, messages %llu sent %llu received, "
           "lock/barrier requests %llu\n",
           program, role, DSM_AVAILABLE() ? dsm_node_id() : 0, took,
           (unsigned long long)(c.faults - counters_before.faults),
           (unsigned long long)(c.messages_sent - counters_before.messages_sent),
           (unsigned long long)(c.messages_received - counters_before.messages_received),
           (unsigned long long)(c.sync_requests - counters_before.sync_requests));
}
