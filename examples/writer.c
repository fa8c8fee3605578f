/* An ordinary POSIX shared memory writer: knows nothing of dsm.
 * usage: writer NAME [SIZE]  — creates NAME, fills it with a pattern, leaves it for readers. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "/demo";
    size_t size = argc > 2 ? strtoul(argv[2], NULL, 0) : 1 << 20;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    if (ftruncate(fd, size) < 0) { perror("ftruncate"); return 1; }
    unsigned *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < size / sizeof *mem; i++) mem[i] = (unsigned)(i * 2654435761u);
    strcpy((char *)mem, "hello from the writer");
    printf("writer: wrote %zu bytes to %s at %p\n", size, name, (void *)mem);
    munmap(mem, size);
    close(fd);
    return 0;
}
