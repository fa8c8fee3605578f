/* Process-shared pthread objects in a shared segment, used the way POSIX programs use them.
 * usage: locks NAME ROLE NPROCS MODE [N]
 *   mutex   N: every process adds N to a counter, non-atomically, under a pthread mutex
 *   cond    N: processes take turns (turn % NPROCS == ROLE) N times each via one condition
 *   barrier N: N rounds of a pthread barrier; role 1 arrives late in every round
 *   robust   : role 0 locks a robust mutex and waits to be killed; role 1 then locks it
 *   timed    : role 0 holds a mutex for a while; role 1 sees trylock fail and timedlock time out
 *   abandon  : role 0 holds the mutex for a second; role 1 waits for it and is killed by the
 *              test meanwhile; role 2 then takes it
 *   rwlock  N: N rounds each; role 0 writes (both halves of a pair), the others read and check
 *              the halves agree
 *   condtime : role 1 waits 150 ms on a condition (CLOCK_MONOTONIC) nobody signals: ETIMEDOUT,
 *              with the mutex held again
 *   churn   N: role 1 forks N children one after another, each locking and unlocking the robust
 *              mutex and exiting at once; none may find the mutex's owner dead
 *   homeless : role 0 holds the mutex; role 1 waits for it, and prints what the wait returned
 *              (the test kills the mutex's home node meanwhile)
 *   scribble N: on the home node, alone: takes the plain mutex once (its home delegates it),
 *              then writes N rounds of garbage over the segment's lock table (found in
 *              /proc/self/maps) while locking and unlocking the mutex, then checks that
 *              trylock still answers and prints "scribbled"
 *   fastpath N: on the mutexes' home node, alone: an error-checking mutex still reports
 *              EDEADLK and EPERM once its home delegated it to this node's processes, a
 *              recursive one counts (and says EPERM to an unlock too many); N uncontended
 *              lock+unlock pairs of the plain mutex and N nested pairs of the recursive one
 *              (mean times printed); a child that exits holding the plain mutex leaves it
 *              locked (EBUSY)
 *   rmutex  N: as mutex, under the recursive mutex taken twice (nested) each time
 * Role 0 creates the segment and initializes the objects; the others wait for `ready`. */
#include "common.h"
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_ROUNDS 4096

struct shared {
    long ready;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    pthread_rwlock_t rwlock;
    long pair[2];
    pthread_barrier_t start, done, rounds;
    long counter;
    long turn;
    long arrived[MAX_ROUNDS];
    long serial[MAX_ROUNDS];
    pthread_mutex_t echeck;
    pthread_mutex_t rec;
};

static void *unlock_other(void *m) {
    return (void *)(long)pthread_mutex_unlock(m);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void check(int rc, const char *what) {
    if (rc != 0) { fprintf(stderr, "%s: %s\n", what, strerror(rc)); exit(1); }
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: locks NAME ROLE NPROCS MODE [N]\n"); return 2; }
    int role = atoi(argv[2]);
    unsigned nprocs = atoi(argv[3]);
    const char *mode = argv[4];
    long n = argc > 5 ? atol(argv[5]) : 0;
    struct shared *s = open_segment(argv[1], role, sizeof(struct shared));
    if (role == 0) {
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        if (!strcmp(mode, "robust") || !strcmp(mode, "churn"))
            pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
        check(pthread_mutex_init(&s->mutex, &ma), "pthread_mutex_init");
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
        check(pthread_mutex_init(&s->echeck, &ma), "pthread_mutex_init");
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
        check(pthread_mutex_init(&s->rec, &ma), "pthread_mutex_init");
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        check(pthread_cond_init(&s->cond, &ca), "pthread_cond_init");
        pthread_barrierattr_t ba;
        pthread_barrierattr_init(&ba);
        pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
        check(pthread_barrier_init(&s->start, &ba, nprocs), "pthread_barrier_init");
        pthread_rwlockattr_t ra;
        pthread_rwlockattr_init(&ra);
        pthread_rwlockattr_setpshared(&ra, PTHREAD_PROCESS_SHARED);
        check(pthread_rwlock_init(&s->rwlock, &ra), "pthread_rwlock_init");
        check(pthread_barrier_init(&s->done, &ba, nprocs), "pthread_barrier_init");
        check(pthread_barrier_init(&s->rounds, &ba, nprocs), "pthread_barrier_init");
        __atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
    } else {
        while (!__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE)) usleep(1000);
    }
    pthread_barrier_wait(&s->start);
    double t0 = now();

    if (!strcmp(mode, "mutex")) {
        for (long i = 0; i < n; i++) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            long v = *(volatile long *)&s->counter;
            *(volatile long *)&s->counter = v + 1;
            check(pthread_mutex_unlock(&s->mutex), "unlock");
        }
        pthread_barrier_wait(&s->done);
        check(pthread_mutex_lock(&s->mutex), "lock");
        long total = s->counter;
        pthread_mutex_unlock(&s->mutex);
        printf("role %d: counter %ld (want %ld) in %.3f s\n", role, total, n * nprocs, now() - t0);
        return total == n * (long)nprocs ? 0 : 1;
    }
    if (!strcmp(mode, "scribble")) {
        check(pthread_mutex_lock(&s->mutex), "lock");
        check(pthread_mutex_unlock(&s->mutex), "unlock");
        FILE *maps = fopen("/proc/self/maps", "r");
        char line[512];
        unsigned long lo = 0, hi = 0;
        while (maps && fgets(line, sizeof line, maps))
            if (strstr(line, ":locks") && sscanf(line, "%lx-%lx", &lo, &hi) == 2) break;
        if (!lo) { fprintf(stderr, "no lock table mapped\n"); return 1; }
        unsigned long long x = 88172645463325252ULL;
        for (long r = 0; r < n; r++) {
            for (unsigned long *p = (unsigned long *)lo; p < (unsigned long *)hi; p++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                *p = r % 3 == 0 ? x : r % 3 == 1 ? ~0UL : x & 0xffffffffffffUL;
            }
            /* Whatever it returns, it returns. */
            if (pthread_mutex_trylock(&s->mutex) == 0) pthread_mutex_unlock(&s->mutex);
        }
        printf("scribbled\n");
        return 0;
    }
    if (!strcmp(mode, "fastpath")) {
        /* The first unlock goes through the home, which then delegates the mutex. */
        for (int i = 0; i < 3; i++) {
            check(pthread_mutex_lock(&s->echeck), "lock");
            check(pthread_mutex_unlock(&s->echeck), "unlock");
        }
        check(pthread_mutex_lock(&s->echeck), "lock");
        int rc = pthread_mutex_lock(&s->echeck);
        if (rc != EDEADLK) { fprintf(stderr, "relock by its holder: %s, want EDEADLK\n", strerror(rc)); return 1; }
        pthread_t t;
        void *result;
        pthread_create(&t, NULL, unlock_other, &s->echeck);
        pthread_join(t, &result);
        if ((long)result != EPERM) { fprintf(stderr, "unlock by another thread: %s, want EPERM\n", strerror((int)(long)result)); return 1; }
        check(pthread_mutex_unlock(&s->echeck), "unlock");
        rc = pthread_mutex_unlock(&s->echeck);
        if (rc != EPERM) { fprintf(stderr, "unlock of an unlocked mutex: %s, want EPERM\n", strerror(rc)); return 1; }
        double t0r = now();
        for (long i = 0; i < n; i++) {
            check(pthread_mutex_lock(&s->rec), "lock");
            check(pthread_mutex_lock(&s->rec), "relock");
            s->counter++;
            check(pthread_mutex_unlock(&s->rec), "unlock");
            check(pthread_mutex_unlock(&s->rec), "unlock");
        }
        printf("%ld nested recursive pairs, %.0f ns each\n", n, (now() - t0r) / n * 1e9);
        s->counter -= n;
        for (int i = 0; i < 3; i++) {
            check(pthread_mutex_lock(&s->rec), "lock");
            check(pthread_mutex_lock(&s->rec), "relock");
            check(pthread_mutex_trylock(&s->rec), "trylock by the holder");
            check(pthread_mutex_unlock(&s->rec), "unlock");
            check(pthread_mutex_unlock(&s->rec), "unlock");
            pthread_create(&t, NULL, unlock_other, &s->rec);
            pthread_join(t, &result);
            if ((long)result != EPERM) { fprintf(stderr, "unlock of a held recursive mutex by another thread: %s, want EPERM\n", strerror((int)(long)result)); return 1; }
            check(pthread_mutex_unlock(&s->rec), "unlock");
            rc = pthread_mutex_unlock(&s->rec);
            if (rc != EPERM) { fprintf(stderr, "unlock of an unlocked recursive mutex: %s, want EPERM\n", strerror(rc)); return 1; }
        }
        for (int i = 0; i < 3; i++) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            check(pthread_mutex_unlock(&s->mutex), "unlock");
        }
        double t1 = now();
        for (long i = 0; i < n; i++) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            s->counter++;
            check(pthread_mutex_unlock(&s->mutex), "unlock");
        }
        printf("%ld lock+unlock pairs, %.0f ns each\n", n, (now() - t1) / n * 1e9);
        pid_t child = fork();
        if (child == 0) {
            check(pthread_mutex_lock(&s->mutex), "lock in the child");
            check(pthread_mutex_unlock(&s->mutex), "unlock in the child");
            check(pthread_mutex_lock(&s->mutex), "lock in the child");
            _exit(0);
        }
        int status;
        waitpid(child, &status, 0);
        rc = pthread_mutex_trylock(&s->mutex);
        if (rc != EBUSY) { fprintf(stderr, "trylock of a mutex a dead child held: %s, want EBUSY\n", strerror(rc)); return 1; }
        printf("fastpath ok, counter %ld\n", s->counter);
        return 0;
    }
    if (!strcmp(mode, "rmutex")) {
        for (long i = 0; i < n; i++) {
            check(pthread_mutex_lock(&s->rec), "lock");
            check(pthread_mutex_lock(&s->rec), "relock");
            long v = *(volatile long *)&s->counter;
            *(volatile long *)&s->counter = v + 1;
            check(pthread_mutex_unlock(&s->rec), "unlock");
            check(pthread_mutex_unlock(&s->rec), "unlock");
        }
        pthread_barrier_wait(&s->done);
        check(pthread_mutex_lock(&s->rec), "lock");
        long total = s->counter;
        pthread_mutex_unlock(&s->rec);
        printf("role %d: counter %ld (want %ld) in %.3f s\n", role, total, n * nprocs, now() - t0);
        return total == n * (long)nprocs ? 0 : 1;
    }
    if (!strcmp(mode, "cond")) {
        for (long i = 0; i < n; i++) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            while (s->turn % nprocs != (unsigned)role) check(pthread_cond_wait(&s->cond, &s->mutex), "wait");
            s->turn++;
            check(pthread_cond_broadcast(&s->cond), "broadcast");
            check(pthread_mutex_unlock(&s->mutex), "unlock");
        }
        pthread_barrier_wait(&s->done);
        printf("role %d: turn %ld (want %ld) in %.3f s\n", role, s->turn, n * nprocs, now() - t0);
        return s->turn == n * (long)nprocs ? 0 : 1;
    }
    if (!strcmp(mode, "barrier")) {
        if (n > MAX_ROUNDS) n = MAX_ROUNDS;
        int bad = 0;
        for (long r = 0; r < n; r++) {
            if (role == 1 && r % 8 == 0) usleep(20000);
            __atomic_add_fetch(&s->arrived[r], 1, __ATOMIC_SEQ_CST);
            int rc = pthread_barrier_wait(&s->rounds);
            if (rc == PTHREAD_BARRIER_SERIAL_THREAD) __atomic_add_fetch(&s->serial[r], 1, __ATOMIC_SEQ_CST);
            else check(rc, "pthread_barrier_wait");
            long seen = __atomic_load_n(&s->arrived[r], __ATOMIC_SEQ_CST);
            if (seen != (long)nprocs) { printf("round %ld: passed with %ld of %u arrived\n", r, seen, nprocs); bad++; }
        }
        pthread_barrier_wait(&s->done);
        for (long r = 0; r < n; r++)
            if (s->serial[r] != 1) { printf("round %ld: %ld serial threads\n", r, s->serial[r]); bad++; }
        printf("role %d: %ld rounds, %d bad, in %.3f s\n", role, n, bad, now() - t0);
        return bad != 0;
    }
    if (!strcmp(mode, "robust")) {
        if (role == 0) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            s->counter = -1; /* half-way through an update */
            printf("holding\n");
            fflush(stdout);
            pause();
            return 0;
        }
        while (__atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) != -1) usleep(1000);
        int rc = pthread_mutex_lock(&s->mutex);
        printf("role %d: first lock: %s\n", role, rc == EOWNERDEAD ? "EOWNERDEAD" : strerror(rc));
        if (rc != EOWNERDEAD) return 1;
        s->counter = 0; /* repaired */
        check(pthread_mutex_consistent(&s->mutex), "pthread_mutex_consistent");
        check(pthread_mutex_unlock(&s->mutex), "unlock");
        rc = pthread_mutex_lock(&s->mutex);
        printf("role %d: second lock: %s\n", role, rc == 0 ? "ok" : strerror(rc));
        pthread_mutex_unlock(&s->mutex);
        return rc != 0;
    }
    if (!strcmp(mode, "timed")) {
        if (role == 0) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            pthread_barrier_wait(&s->rounds);
            pthread_barrier_wait(&s->done);
            pthread_mutex_unlock(&s->mutex);
            return 0;
        }
        pthread_barrier_wait(&s->rounds);
        int busy = pthread_mutex_trylock(&s->mutex);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
        double t = now();
        int timed = pthread_mutex_timedlock(&s->mutex, &until);
        double waited = now() - t;
        pthread_barrier_wait(&s->done);
        int later = pthread_mutex_lock(&s->mutex);
        printf("role %d: trylock %s, timedlock %s after %.3f s, lock %s\n", role,
               busy == EBUSY ? "EBUSY" : strerror(busy), timed == ETIMEDOUT ? "ETIMEDOUT" : strerror(timed),
               waited, later == 0 ? "ok" : strerror(later));
        pthread_mutex_unlock(&s->mutex);
        return !(busy == EBUSY && timed == ETIMEDOUT && waited >= 0.19 && later == 0);
    }
    if (!strcmp(mode, "rwlock")) {
        long torn = 0;
        for (long i = 0; i < n; i++) {
            if (role == 0) {
                check(pthread_rwlock_wrlock(&s->rwlock), "wrlock");
                *(volatile long *)&s->pair[0] = i + 1;
                usleep(100);
                *(volatile long *)&s->pair[1] = i + 1;
                check(pthread_rwlock_unlock(&s->rwlock), "unlock");
            } else {
                check(pthread_rwlock_rdlock(&s->rwlock), "rdlock");
                if (*(volatile long *)&s->pair[0] != *(volatile long *)&s->pair[1]) torn++;
                check(pthread_rwlock_unlock(&s->rwlock), "unlock");
            }
        }
        pthread_barrier_wait(&s->done);
        printf("role %d: %ld rounds, %ld torn reads, pair %ld/%ld\n", role, n, torn, s->pair[0], s->pair[1]);
        return torn != 0 || s->pair[0] != n || s->pair[1] != n;
    }
    if (!strcmp(mode, "condtime")) {
        if (role == 1) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += 150 * 1000 * 1000;
            if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
            double t = now();
            int rc = pthread_cond_timedwait(&s->cond, &s->mutex, &until);
            double waited = now() - t;
            /* The mutex is ours again: another process cannot take it. */
            __atomic_store_n(&s->counter, 1, __ATOMIC_RELEASE);
            pthread_barrier_wait(&s->rounds);
            pthread_barrier_wait(&s->rounds);
            check(pthread_mutex_unlock(&s->mutex), "unlock");
            printf("role 1: timedwait %s after %.3f s\n", rc == ETIMEDOUT ? "ETIMEDOUT" : strerror(rc), waited);
            pthread_barrier_wait(&s->done);
            return !(rc == ETIMEDOUT && waited >= 0.14 && waited < 5);
        }
        pthread_barrier_wait(&s->rounds);
        int busy = pthread_mutex_trylock(&s->mutex);
        pthread_barrier_wait(&s->rounds);
        pthread_barrier_wait(&s->done);
        printf("role 0: trylock while the waiter holds it: %s\n", busy == EBUSY ? "EBUSY" : strerror(busy));
        return busy != EBUSY;
    }
    if (!strcmp(mode, "churn")) {
        if (role == 1) {
            int dead = 0;
            for (long i = 0; i < n; i++) {
                pid_t pid = fork();
                if (pid == 0) {
                    int rc = pthread_mutex_lock(&s->mutex);
                    pthread_mutex_unlock(&s->mutex);
                    _exit(rc == 0 ? 0 : 1);
                }
                int status;
                waitpid(pid, &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) dead++;
            }
            int rc = pthread_mutex_lock(&s->mutex);
            printf("role 1: %ld children, %d saw a dead owner, last lock %s\n", n, dead,
                   rc == 0 ? "ok" : strerror(rc));
            pthread_mutex_unlock(&s->mutex);
            pthread_barrier_wait(&s->done);
            return dead != 0 || rc != 0;
        }
        pthread_barrier_wait(&s->done);
        return 0;
    }
    if (!strcmp(mode, "abandon")) {
        if (role == 0) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            __atomic_store_n(&s->counter, 1, __ATOMIC_RELEASE);
            sleep(1);
            check(pthread_mutex_unlock(&s->mutex), "unlock");
            while (__atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) != 3) usleep(1000);
            return 0;
        }
        while (__atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) != 1) usleep(1000);
        if (role == 1) {
            printf("waiting\n");
            fflush(stdout);
            pthread_mutex_lock(&s->mutex);
            printf("role 1 got the lock it should have died waiting for\n");
            return 1;
        }
        usleep(300000);
        check(pthread_mutex_lock(&s->mutex), "lock");
        __atomic_store_n(&s->counter, 3, __ATOMIC_RELEASE);
        printf("role 2 locked\n");
        check(pthread_mutex_unlock(&s->mutex), "unlock");
        return 0;
    }
    if (!strcmp(mode, "homeless")) {
        if (role == 0) {
            check(pthread_mutex_lock(&s->mutex), "lock");
            __atomic_store_n(&s->counter, 1, __ATOMIC_RELEASE);
            pause();
            return 0;
        }
        while (__atomic_load_n(&s->counter, __ATOMIC_ACQUIRE) != 1) usleep(1000);
        printf("waiting\n");
        fflush(stdout);
        int rc = pthread_mutex_lock(&s->mutex);
        printf("lock returned %s\n", rc == ENOTRECOVERABLE ? "ENOTRECOVERABLE" : strerror(rc));
        return rc != ENOTRECOVERABLE;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
