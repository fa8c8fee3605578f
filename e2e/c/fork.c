/* Parent and child share a segment across fork(); the child faults pages in on its own. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *name = argv[1];
    size_t size = 16 * 4096;
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    if (ftruncate(fd, size) < 0) { perror("ftruncate"); return 1; }
    volatile long *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    mem[0] = 1234;                       /* page 0 touched by the parent before fork */
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        if (mem[0] != 1234) { printf("child saw %ld\n", mem[0]); _exit(2); }
        mem[512 * 3] = 5678;             /* page 3: first touched by the child */
        mem[0] = 4321;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { printf("child failed %d\n", status); return 1; }
    printf("parent sees %ld and %ld\n", mem[0], mem[512 * 3]);
    shm_unlink(name);
    return mem[0] == 4321 && mem[512 * 3] == 5678 ? 0 : 3;
}
