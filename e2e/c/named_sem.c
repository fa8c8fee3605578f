/* Named POSIX semaphores, as two unrelated programs use them: role 0 creates "NAME-ping" and
 * "NAME-pong" with sem_open(O_CREAT), role 1 opens them by name; they bounce ROUNDS times.
 * usage: named_sem NAME ROLE ROUNDS */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sem_t *open_sem(const char *base, const char *suffix, int create) {
    char name[256];
    snprintf(name, sizeof name, "%s-%s", base, suffix);
    for (int i = 0; i < 4000; i++) {
        sem_t *s = create ? sem_open(name, O_CREAT | O_EXCL, 0600, 0) : sem_open(name, 0);
        if (s != SEM_FAILED) return s;
        if (create || errno != ENOENT) { perror("sem_open"); exit(1); }
        usleep(5000);
    }
    fprintf(stderr, "%s never appeared\n", name);
    exit(1);
}

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long rounds = atol(argv[3]);
    sem_t *ping = open_sem(argv[1], "ping", role == 0), *pong = open_sem(argv[1], "pong", role == 0);
    for (long r = 0; r < rounds; r++) {
        if (role == 0) {
            sem_post(ping);
            if (sem_wait(pong)) { perror("sem_wait"); return 1; }
        } else {
            if (sem_wait(ping)) { perror("sem_wait"); return 1; }
            sem_post(pong);
        }
    }
    int a = -1, b = -1;
    sem_getvalue(ping, &a);
    sem_getvalue(pong, &b);
    /* Role 1's last post may not have been taken yet: role 0 takes it (within 10 s). */
    for (int i = 0; role == 1 && b == 1 && i < 2000; i++) {
        usleep(5000);
        sem_getvalue(pong, &b);
    }
    printf("role %d: %ld rounds, values %d %d\n", role, rounds, a, b);
    if (sem_close(ping) || sem_close(pong)) { perror("sem_close"); return 1; }
    if (role == 0) {
        char name[256];
        snprintf(name, sizeof name, "%s-ping", argv[1]);
        sem_unlink(name);
        snprintf(name, sizeof name, "%s-pong", argv[1]);
        sem_unlink(name);
    }
    return !(a == 0 && b == 0);
}
