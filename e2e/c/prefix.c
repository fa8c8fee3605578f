/* Writes every page of a segment (creating it), or reads its first pages in order, as a
 * program that stops reading part way does.
 * usage: prefix write NAME PAGES | prefix read NAME COUNT */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: prefix write|read NAME N\n"); return 2; }
    int write = !strcmp(argv[1], "write");
    size_t n = atol(argv[3]);
    int fd = shm_open(argv[2], write ? O_CREAT | O_RDWR : O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    struct stat st;
    if (write && ftruncate(fd, n * 4096) < 0) { perror("ftruncate"); return 1; }
    fstat(fd, &st);
    volatile char *mem = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    long sum = 0;
    for (size_t p = 0; p < n && p < (size_t)st.st_size / 4096; p++) {
        if (write) mem[p * 4096] = (char)(mem[p * 4096] + 1);
        else sum += mem[p * 4096];
    }
    printf("%s %zu pages, sum %ld\n", argv[1], n, sum);
    return 0;
}
