/* DSM faults and system calls whatever the signal mask (issue 9, part 4).
 *
 *   sigmask NAME producer   fills the segment and exits
 *   sigmask NAME consumer   (another node) a thread that blocked SIGSEGV and SIGSYS reads and
 *                           writes DSM memory and writes a file from it, and still sees both
 *                           in its mask; a SIGUSR1 handler on an alternate signal stack whose
 *                           sa_mask holds SIGSEGV touches DSM memory; a foreign fault on a
 *                           thread that blocks SIGSEGV still kills (checked by the test). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include "common.h"

#define SIZE (1u << 20)
#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

static unsigned char *p;
static volatile long seen_in_handler = -1;

static void *blocked_thread(void *arg) {
    (void)arg;
    sigset_t set, now;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigaddset(&set, SIGSYS);
    CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0, "pthread_sigmask");
    long sum = 0;
    for (size_t i = 0; i < 65536; i += 4096) sum += p[i];
    CHECK(sum == 16 * 7, "read %ld through a thread blocking SIGSEGV", sum);
    p[8192 + 1] = 9;
    char path[] = "/tmp/dsm-sigmask-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    CHECK(write(fd, p + 65536, 20000) == 20000, "write from DSM with SIGSYS blocked: %s", strerror(errno));
    close(fd);
    unlink(path);
    CHECK(pthread_sigmask(SIG_SETMASK, NULL, &now) == 0, "pthread_sigmask query");
    CHECK(sigismember(&now, SIGSEGV) == 1 && sigismember(&now, SIGSYS) == 1,
          "the thread no longer sees SIGSEGV and SIGSYS in its mask");
    CHECK(sigprocmask(SIG_UNBLOCK, &set, &now) == 0 && sigismember(&now, SIGSEGV) == 1, "sigprocmask");
    CHECK(pthread_sigmask(SIG_SETMASK, NULL, &now) == 0 && sigismember(&now, SIGSEGV) == 0,
          "unblocked, yet reported blocked");
    return NULL;
}

static void on_usr1(int sig) {
    (void)sig;
    seen_in_handler = p[200 * 1024] + p[300 * 1024];
    p[400 * 1024] = 5;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: sigmask NAME producer|consumer|foreign\n"); return 2; }
    int prod = strcmp(argv[2], "producer") == 0;
    p = open_segment(argv[1], prod ? 0 : 1, SIZE);
    if (prod) {
        for (size_t i = 0; i < SIZE; i++) p[i] = 7;
        __atomic_store_n((long *)(p + SIZE - 8), 1, __ATOMIC_RELEASE);
        return 0;
    }
    while (__atomic_load_n((long *)(p + SIZE - 8), __ATOMIC_ACQUIRE) != 1) usleep(1000);
    if (strcmp(argv[2], "foreign") == 0) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGSEGV);
        sigprocmask(SIG_BLOCK, &set, NULL);
        p[0] = 1; /* a DSM fault: served */
        printf("about to fault\n");
        fflush(stdout);
        int *volatile bad = (int *)16;
        *bad = 1; /* not ours: the process dies of SIGSEGV as without the shim */
        return 0;
    }
    pthread_t t;
    pthread_create(&t, NULL, blocked_thread, NULL);
    pthread_join(t, NULL);

    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
    CHECK(sigaltstack(&ss, NULL) == 0, "sigaltstack");
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaddset(&sa.sa_mask, SIGSEGV);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    raise(SIGUSR1);
    CHECK(seen_in_handler == 14, "handler on the alternate stack read %ld", seen_in_handler);
    CHECK(p[400 * 1024] == 5, "handler's write lost");
    printf("sigmask ok\n");
    return 0;
}
