/* Writes a pattern into the first WRITE bytes of a segment (default: all of it), says "ready",
 * then waits to be killed.  usage: hold NAME SIZE [WRITE] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t size = strtoul(argv[2], NULL, 0);
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    if (ftruncate(fd, size) < 0) { perror("ftruncate"); return 1; }
    unsigned *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    size_t write = argc > 3 ? strtoul(argv[3], NULL, 0) : size;
    for (size_t i = 0; i < write / sizeof *mem; i++) mem[i] = (unsigned)(i * 2654435761u);
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
