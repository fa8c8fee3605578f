/* sem_wait and sem_timedwait on a DSM semaphore return EINTR when a signal handler runs, as
 * glibc's do (whatever SA_RESTART says), and the semaphore's count is intact afterwards.
 *
 *   sem_eintr NAME init    node 1: the segment (so the semaphore's home) and sem_init(0)
 *   sem_eintr NAME wait    node 2 */
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

static volatile sig_atomic_t fired;
static void on_alarm(int sig) { (void)sig; fired++; }

static void arm(int restart) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 200000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: sem_eintr NAME init|wait\n"); return 2; }
    if (!strcmp(argv[2], "init")) {
        sem_t *s = open_segment(argv[1], 0, 4096);
        CHECK(sem_init(s, 1, 0) == 0, "sem_init: %s", strerror(errno));
        return 0;
    }
    sem_t *s = open_segment(argv[1], 1, 4096);
    arm(1);
    errno = 0;
    int r = sem_wait(s);
    CHECK(r == -1 && errno == EINTR && fired == 1, "sem_wait with an SA_RESTART handler: %d %s", r, strerror(errno));
    arm(0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    errno = 0;
    r = sem_timedwait(s, &until);
    CHECK(r == -1 && errno == EINTR && fired == 2, "sem_timedwait: %d %s", r, strerror(errno));
    CHECK(sem_post(s) == 0, "sem_post");
    CHECK(sem_wait(s) == 0, "sem_wait after post: %s", strerror(errno));
    int v = -1;
    CHECK(sem_getvalue(s, &v) == 0 && v == 0, "value %d after a post and a wait", v);
    printf("sem eintr ok\n");
    return 0;
}
