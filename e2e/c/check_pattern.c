/* Opens an existing segment read-write and checks the pattern examples/writer.c writes after its
 * first 8 words; "unlink" as the second argument unlinks it. */
#include <fcntl.h>
#include <stdio.h>
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
    size_t bad = 0, words = st.st_size / sizeof *mem;
    for (size_t i = 8; i < words; i++)
        if (mem[i] != (unsigned)(i * 2654435761u)) bad++;
    printf("%zu of %zu words wrong\n", bad, words);
    if (argc > 2 && !strcmp(argv[2], "unlink")) shm_unlink(argv[1]);
    return bad != 0;
}
