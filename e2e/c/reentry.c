/* A signal handler of the program touches DSM memory while the interrupted thread may be in the
 * middle of a request to the daemon (inside shm_open): the handler's fault must not corrupt
 * that thread's conversation with the daemon. A fast interval timer's handler reads the next
 * fresh page (each read faults); the main thread opens and closes a segment in a loop.
 * usage: reentry NAME OPENS */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

#define PAGES 4096
static volatile char *mem;
static volatile long touched;
static volatile long sink;

static void on_alarm(int sig) {
    (void)sig;
    if (touched < PAGES) sink += mem[touched++ * 4096];
}

int main(int argc, char **argv) {
    long opens = atol(argv[2]);
    char other[256];
    snprintf(other, sizeof other, "%s-other", argv[1]);
    int fd = shm_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, PAGES * 4096) < 0) { perror("setup"); return 1; }
    mem = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    int ofd = shm_open(other, O_CREAT | O_RDWR, 0600);
    if (ofd < 0) { perror("shm_open other"); return 1; }
    close(ofd);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    long failed = 0;
    for (long i = 0; i < opens; i++) {
        int f = shm_open(other, O_RDWR, 0);
        if (f < 0) { failed++; fprintf(stderr, "open %ld: %s\n", i, strerror(errno)); }
        else close(f);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("%ld opens, %ld failed, %ld pages touched by the handler\n", opens, failed, touched);
    shm_unlink(other);
    shm_unlink(argv[1]);
    return failed != 0 || touched == 0;
}
