/* Memory past the segment's end is gone: touching it raises SIGBUS, as for a file mapping. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void on_bus(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "SIGBUS %d code %d at %p\n", sig, info->si_code, info->si_addr);
    write(1, buf, n);
    _exit(7);
}

int main(int argc, char **argv) {
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    ftruncate(fd, 4096);
    volatile char *mem = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    shm_unlink(argv[1]);
    mem[0] = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    printf("page 2 is at %p\n", (void *)(mem + 2 * 4096));
    fflush(stdout);
    mem[2 * 4096] = 1;
    printf("not reached\n");
    return 0;
}
