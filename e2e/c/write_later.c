/* Maps a segment that exists and writes page PAGE (so it holds write access), says "mapped",
 * then for each line on stdin writes the page again and says "wrote N".
 * usage: write_later NAME PAGE */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int fd = shm_open(argv[1], O_RDWR, 0);
    if (fd < 0) { perror("shm_open"); return 1; }
    struct stat st;
    fstat(fd, &st);
    volatile unsigned *mem = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    size_t at = atol(argv[2]) * 4096 / sizeof *mem;
    mem[at] += 1;
    printf("mapped\n");
    fflush(stdout);
    char line[16];
    for (unsigned n = 2; fgets(line, sizeof line, stdin); n++) {
        mem[at] += 1;
        printf("wrote %u\n", n);
        fflush(stdout);
    }
    return 0;
}
