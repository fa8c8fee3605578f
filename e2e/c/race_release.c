/* A writer thread stores to a page while another thread of the same process releases it over
 * and over (msync MS_SYNC): a release's replica may be taken while the writer still stores.
 * The writer stops on its own (maybe while a release is under way, storing nothing after);
 * the main thread joins it and releases once more: everything the writer stored happened
 * before that last release, so it must be on the replica node.
 * One round per page, each with its own writer.
 *
 *   race_release NAME PAGES write   creates NAME, runs the rounds, prints "final P V" per page
 *                                   (V: the last value stored), then "done", then waits
 *   race_release NAME PAGES read    prints "page P V" per page */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common.h"

static volatile unsigned *word;
static atomic_int finished;
static unsigned last;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Stores for 50 ms and stops on its own: its last stores may fall while a release is under
 * way, and then nothing stores again before the next release. */
static void *writer(void *arg) {
    (void)arg;
    unsigned v = 0;
    for (double end = now() + 0.05;;) {
        word[0] = ++v;
        if ((v & 255) == 0 && now() >= end) break;
    }
    last = v;
    atomic_store(&finished, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: race_release NAME PAGES write|read\n"); return 2; }
    int pages = atoi(argv[2]);
    int writing = !strcmp(argv[3], "write");
    unsigned *mem = open_segment(argv[1], writing ? 0 : 1, (size_t)pages * 4096);
    if (!writing) {
        for (int p = 0; p < pages; p++) printf("page %d %u\n", p, mem[p * 1024]);
        return 0;
    }
    for (int p = 0; p < pages; p++) {
        word = mem + p * 1024;
        atomic_store(&finished, 0);
        pthread_t t;
        pthread_create(&t, NULL, writer, NULL);
        /* Releases back to back while the writer stores. */
        while (!atomic_load(&finished))
            if (msync(mem, (size_t)pages * 4096, MS_SYNC)) { perror("msync"); return 1; }
        pthread_join(t, NULL);
        if (msync(mem, (size_t)pages * 4096, MS_SYNC)) { perror("msync"); return 1; }
        printf("final %d %u\n", p, last);
        fflush(stdout);
    }
    printf("done\n");
    fflush(stdout);
    for (;;) pause();
}
