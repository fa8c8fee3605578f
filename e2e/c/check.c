/* Opens an existing segment and checks the pattern hold.c and examples/writer.c store
 * (word i holds i * 2654435761), from word FIRST on (writer.c puts a string in the first 8).
 * usage: check NAME [unlink|keep] [FIRST] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int fd = shm_open(argv[1], O_RDWR, 0);
    if (fd < 0) { perror("shm_open"); return 1; }
    struct stat st;
    fstat(fd, &st);
    const unsigned *mem = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    size_t first = argc > 3 ? strtoul(argv[3], NULL, 0) : 0;
    size_t bad = 0, words = st.st_size / sizeof *mem;
    for (size_t i = first; i < words; i++)
        if (mem[i] != (unsigned)(i * 2654435761u)) bad++;
    printf("%zu of %zu words wrong\n", bad, words);
    if (argc > 2 && !strcmp(argv[2], "unlink")) shm_unlink(argv[1]);
    return bad != 0;
}
