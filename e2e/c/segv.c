/* SIGSEGV outside DSM memory must behave as without the shim.
 * usage: segv NAME MODE
 *   none       no handler: dies of signal 11
 *   sigaction  SA_SIGINFO handler installed after the DSM mapping: exits 42 with the address
 *   early      handler installed with signal() before the DSM mapping: exits 43
 *   longjmp    handler siglongjmps out, twice, then the program goes on using DSM memory */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf jump;
static void on_info(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "caught %d at %p\n", sig, info->si_addr);
    write(1, buf, n);
    _exit(42);
}
static void on_plain(int sig) { (void)sig; write(1, "caught plain\n", 13); _exit(43); }
static void on_jump(int sig) { (void)sig; siglongjmp(jump, 1); }

int main(int argc, char **argv) {
    const char *mode = argv[2];
    if (!strcmp(mode, "early")) signal(SIGSEGV, on_plain);
    int fd = shm_open(argv[1], O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    ftruncate(fd, 4096);
    volatile int *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    mem[0] = 7;
    volatile int *bad = (int *)16;
    if (!strcmp(mode, "sigaction")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_info;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
    }
    if (!strcmp(mode, "longjmp")) {
        signal(SIGSEGV, on_jump);
        int caught = 0;
        for (int i = 0; i < 2; i++)
            if (sigsetjmp(jump, 1) == 0) *bad = 1; else caught++;
        mem[1] = mem[0] + caught;        /* DSM memory still works after foreign faults */
        printf("caught %d, mem %d\n", caught, mem[1]);
        shm_unlink(argv[1]);
        return mem[1] == 9 ? 0 : 1;
    }
    fflush(stdout);
    *bad = 1;
    printf("not reached\n");
    return 0;
}
