/* An ordinary POSIX shared memory reader: knows nothing of dsm.
 * usage: reader NAME [SIZE] — opens NAME, checks the writer's pattern, unlinks it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "/demo";
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) { perror("shm_open"); return 1; }
    struct stat st;
    if (fstat(fd, &st) < 0) { perror("fstat"); return 1; }
    size_t size = st.st_size;
    const unsigned *mem = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    size_t bad = 0;
    for (size_t i = 8; i < size / sizeof *mem; i++)
        if (mem[i] != (unsigned)(i * 2654435761u)) bad++;
    printf("reader: %s is %zu bytes at %p: \"%s\", %zu words wrong\n", name, size, (void *)mem,
           (const char *)mem, bad);
    munmap((void *)mem, size);
    close(fd);
    shm_unlink(name);
    return bad != 0;
}
