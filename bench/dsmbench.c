/* dsm benchmark workloads and their physical floors. Each mode prints one JSON line:
 *   {"what": ..., "samples": n, "p50_ns": ..., "p99_ns": ..., ...}
 * Workloads run under LD_PRELOAD=libdsm.so (they are ordinary shm programs); floors do not.
 *
 *   first NAME PAGES        create a segment, time the first write to each page
 *   read NAME PAGES         open a segment, time the first read of each page (last to first)
 *   write NAME PAGES        open a segment, time the first write of each page (last to first)
 *   scan NAME               open a segment, read it end to end: MB/s
 *   fill NAME BYTES         create a segment and write all of it (untimed setup)
 *   pingpong NAME ROLE SECS two processes write one page in turn; role 0 reports round trips/s
 *   create NAME BYTES       create a segment, touch nothing
 *   random NAME TOUCHES SEED read|write  touch random pages: per-touch latency
 *   ht-build NAME KEYS      create an open-addressing hash table of KEYS entries in a segment
 *   ht-lookup NAME KEYS SECS  look every key up once (warm-up), then random lookups: ops/s
 *   sync-setup NAME         create a segment with a process-shared mutex (page 0) and a barrier
 *                           of 2 (page 1), each alone on its page
 *   lock NAME ROLE SECS     lock/unlock the mutex in a loop with the other role: acquisitions
 *   lock-count NAME ROLE SECS  the same, adding one to a counter (page 2) while holding it
 *   lock-solo NAME N        lock+unlock, uncontended: per-pair latency
 *   barrier NAME ROLE N     N rounds of the barrier with the other role; role 0 reports rounds/s
 *   write-file NAME N       N pwrite()s of 1 MiB to a temporary file from the segment's first
 *                           MiB (node-local after the first) and, alternating, from private
 *                           memory (the floor, same run); also the first, cold one
 *   floor-fault PAGES       SIGSEGV whose handler only mprotects the page
 *   floor-unix N            Unix socket round trip between two processes
 *   floor-unix-2cpu N       the same, the two processes pinned to CPUs 0 and 1 (a cross-CPU wake-up each way)
 *   floor-tcp N             TCP loopback round trip carrying 4 KiB back
 *   floor-tcp-bw MB         TCP loopback bandwidth, MB/s
 *   fill-alternate NAME PAGES  create NAME of PAGES pages and write every other one
 *   held NAME MOST          read every other page of NAME (another node wrote it) one by one,
 *                           holding ever more separate mappings; at 1k, 10k, 100k and 1M held
 *                           (up to MOST), 1,000 more such faults and mprotects of a private
 *                           page beside them: latencies
 *   floor-mprotect N        mprotect of a private page toggled N times, nothing else held
 *   floor-memfd PAGES       store 4 KiB into each fresh page of a memfd mapping (what a node
 *                           pays to receive a page it never had): MB/s
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, size_t n) {
    qsort(ns, n, sizeof *ns, cmp);
    printf("{\"what\": \"%s\", \"samples\": %zu, \"p50_ns\": %lu, \"p99_ns\": %lu, \"max_ns\": %lu}\n",
           what, n, ns[n / 2], ns[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], ns[n - 1]);
}

static void die(const char *what) { perror(what); exit(1); }

static char *open_segment(const char *name, int create, size_t size, size_t *out_size) {
    int fd = shm_open(name, create ? O_CREAT | O_EXCL | O_RDWR : O_RDWR, 0600);
    if (fd < 0) die("shm_open");
    if (create && ftruncate(fd, size) < 0) die("ftruncate");
    struct stat st;
    fstat(fd, &st);
    char *m = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) die("mmap");
    close(fd);
    if (out_size) *out_size = st.st_size;
    return m;
}

/* Touches every page once, last to first: read-ahead follows ascending runs and a state-table
 * hit opens the pages after the faulting one, so in this order every access is one fault. */
static void touch(const char *what, char *m, size_t pages, int write) {
    uint64_t *ns = malloc(pages * sizeof *ns);
    volatile char sink = 0;
    for (size_t p = pages; p-- > 0;) {
        uint64_t t0 = now_ns();
        if (write) ((volatile char *)m)[p * PAGE] = 1;
        else sink += ((volatile char *)m)[p * PAGE];
        ns[p] = now_ns() - t0;
    }
    (void)sink;
    report(what, ns, pages);
}

static char *fault_page;
static void on_fault(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    char *page = (char *)((uintptr_t)info->si_addr & ~(uintptr_t)(PAGE - 1));
    mprotect(page, PAGE, PROT_READ | PROT_WRITE);
}

static void floor_fault(size_t pages) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    fault_page = mmap(NULL, pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    touch("floor-fault", fault_page, pages, 1);
}

/* A Unix socket round trip between two processes; with `two_cpus`, pinned to CPUs 0 and 1, so
 * every hop wakes the other CPU, as the hops between a process, its daemon and a peer daemon
 * may (one CPU only: both stay on CPU 0). */
static void floor_unix(size_t n, int two_cpus) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    cpu_set_t one;
    if (two_cpus) {
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        if (sched_setaffinity(0, sizeof one, &one) < 0) die("sched_setaffinity");
    }
    pid_t pid = fork();
    char buf[64];
    if (pid == 0) {
        if (two_cpus) {
            CPU_ZERO(&one);
            CPU_SET(1, &one);
            (void)sched_setaffinity(0, sizeof one, &one);
        }
        close(sv[0]);
        while (read(sv[1], buf, 16) == 16) if (write(sv[1], buf, 16) != 16) break;
        _exit(0);
    }
    close(sv[1]);
    uint64_t *ns = malloc(n * sizeof *ns);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if (write(sv[0], buf, 16) != 16 || read(sv[0], buf, 16) != 16) die("unix rt");
        ns[i] = now_ns() - t0;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    report(two_cpus ? "floor-unix-2cpu" : "floor-unix", ns, n);
}

static int tcp_pair(pid_t *child, int bandwidth_mb) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0) die("listen");
    getsockname(l, (struct sockaddr *)&a, &len);
    *child = fork();
    if (*child == 0) {
        int c = accept(l, NULL, NULL);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        static char page[1 << 16];
        if (bandwidth_mb) {
            long left = (long)bandwidth_mb << 20;
            while (left > 0) { ssize_t w = write(c, page, sizeof page); if (w <= 0) break; left -= w; }
        } else {
            char req[16];
            for (;;) {
                ssize_t got = 0;
                while (got < 16) { ssize_t r = read(c, req + got, 16 - got); if (r <= 0) _exit(0); got += r; }
                if (write(c, page, PAGE) != PAGE) _exit(0);
            }
        }
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

static void floor_tcp(size_t n) {
    pid_t pid;
    int s = tcp_pair(&pid, 0);
    char req[16] = {0}, page[PAGE];
    uint64_t *ns = malloc(n * sizeof *ns);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if (write(s, req, 16) != 16) die("tcp write");
        size_t got = 0;
        while (got < PAGE) { ssize_t r = read(s, page + got, PAGE - got); if (r <= 0) die("tcp read"); got += r; }
        ns[i] = now_ns() - t0;
    }
    close(s);
    waitpid(pid, NULL, 0);
    report("floor-tcp", ns, n);
}

static void floor_tcp_bw(int mb) {
    pid_t pid;
    int s = tcp_pair(&pid, mb);
    static char buf[1 << 16];
    long total = 0;
    uint64_t t0 = now_ns();
    for (;;) { ssize_t r = read(s, buf, sizeof buf); if (r <= 0) break; total += r; }
    double secs = (now_ns() - t0) / 1e9;
    waitpid(pid, NULL, 0);
    printf("{\"what\": \"floor-tcp-bw\", \"bytes\": %ld, \"mb_per_s\": %.1f}\n", total, total / secs / 1e6);
}

static void floor_memfd(size_t pages) {
    int fd = memfd_create("floor", 0);
    if (fd < 0 || ftruncate(fd, pages * PAGE) < 0) die("memfd");
    char *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) die("mmap");
    static char page[PAGE];
    memset(page, 7, sizeof page);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < pages; i++) memcpy(m + i * PAGE, page, PAGE);
    double secs = (now_ns() - t0) / 1e9;
    printf("{\"what\": \"floor-memfd\", \"bytes\": %zu, \"mb_per_s\": %.1f}\n", pages * PAGE, pages * PAGE / secs / 1e6);
}

static void write_file(const char *name, long n) {
    const size_t mib = 1 << 20;
    char *m = open_segment(name, 0, 0, NULL);
    char *priv = malloc(mib);
    memset(priv, 7, mib);
    char path[] = "/tmp/dsmbench-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp");
    unlink(path);
    uint64_t *dsm = malloc(n * sizeof *dsm), *floor = malloc(n * sizeof *floor);
    uint64_t t0 = now_ns();
    if (pwrite(fd, m, mib, 0) != (ssize_t)mib) die("pwrite from DSM memory");
    uint64_t cold = now_ns() - t0;
    for (long i = 0; i < n; i++) {
        t0 = now_ns();
        if (pwrite(fd, priv, mib, 0) != (ssize_t)mib) die("pwrite from private memory");
        floor[i] = now_ns() - t0;
        t0 = now_ns();
        if (pwrite(fd, m, mib, 0) != (ssize_t)mib) die("pwrite from DSM memory");
        dsm[i] = now_ns() - t0;
    }
    qsort(dsm, n, sizeof *dsm, cmp);
    qsort(floor, n, sizeof *floor, cmp);
    printf("{\"what\": \"write-file\", \"samples\": %ld, \"p50_ns\": %lu, \"p99_ns\": %lu, "
           "\"floor_p50_ns\": %lu, \"cold_ns\": %lu}\n",
           n, dsm[n / 2], dsm[(n * 99) / 100], floor[n / 2], cold);
    close(fd);
}

/* Sequential writes of MIB fresh MiB, msync(MS_SYNC) after each (a release point: with
 * replicas, each MiB is on the replica nodes before the next is written). */
static void write_msync(const char *name, long mib) {
    const size_t chunk = 1 << 20;
    char *m = open_segment(name, 1, mib * chunk, NULL);
    uint64_t t0 = now_ns();
    for (long i = 0; i < mib; i++) {
        memset(m + i * chunk, (int)i + 1, chunk);
        if (msync(m + i * chunk, chunk, MS_SYNC)) die("msync");
    }
    double secs = (now_ns() - t0) / 1e9;
    printf("{\"what\": \"write-msync\", \"bytes\": %zu, \"mb_per_s\": %.1f}\n", mib * chunk,
           mib * chunk / secs / 1e6);
}

static void scan(const char *name) {
    size_t size;
    char *m = open_segment(name, 0, 0, &size);
    uint64_t t0 = now_ns();
    uint64_t sum = 0;
    for (size_t i = 0; i < size; i += 64) sum += ((volatile char *)m)[i];
    double secs = (now_ns() - t0) / 1e9;
    printf("{\"what\": \"scan\", \"bytes\": %zu, \"mb_per_s\": %.1f, \"check\": %lu}\n", size, size / secs / 1e6, sum);
}

static void pingpong(const char *name, int role, int secs) {
    char *m = open_segment(name, 0, 0, NULL); /* created beforehand (mode "first") */
    volatile long *turn = (long *)m, *ready = (long *)(m + PAGE);
    if (role == 0) { while (__atomic_load_n(ready, __ATOMIC_ACQUIRE) == 0) sched_yield(); }
    else __atomic_store_n(ready, 1, __ATOMIC_RELEASE);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)secs * 1000000000u;
    long rounds = 0;
    for (;;) {
        long t = __atomic_load_n(turn, __ATOMIC_ACQUIRE);
        if (t < 0) break;
        /* Yield while waiting: on a machine with fewer cores than processes and daemons, a
         * spinning waiter would take the CPU from the daemon that is bringing its page. */
        if ((t & 1) != role) { sched_yield(); continue; }
        {
            if (role == 0 && now_ns() > end) { __atomic_store_n(turn, -1, __ATOMIC_RELEASE); break; }
            __atomic_store_n(turn, t + 1, __ATOMIC_RELEASE);
            if (role == 0) rounds++;
        }
    }
    if (role == 0) {
        double s = (now_ns() - t0) / 1e9;
        printf("{\"what\": \"pingpong\", \"round_trips\": %ld, \"per_s\": %.0f}\n", rounds, rounds / s);
    }
}

static void random_touch(const char *name, size_t touches, uint64_t seed, int write) {
    size_t size;
    char *m = open_segment(name, 0, 0, &size);
    size_t pages = size / PAGE;
    uint64_t *ns = malloc(touches * sizeof *ns), x = seed * 2654435761u + 1;
    volatile char sink = 0;
    for (size_t i = 0; i < touches; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t p = x % pages;
        uint64_t t0 = now_ns();
        if (write) ((volatile char *)m)[p * PAGE] = 1;
        else sink += ((volatile char *)m)[p * PAGE];
        ns[i] = now_ns() - t0;
    }
    (void)sink;
    report(write ? "random-write" : "random-read", ns, touches);
}

/* A read-mostly hash table, the way a C programmer would put one in shared memory: open
 * addressing, linear probing, 16-byte slots, twice as many slots as keys. */
struct slot { uint64_t key, value; };

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void ht_build(const char *name, uint64_t keys) {
    uint64_t slots = keys * 2;
    struct slot *t = (struct slot *)open_segment(name, 1, slots * sizeof(struct slot), NULL);
    for (uint64_t k = 1; k <= keys; k++) {
        uint64_t i = mix(k) % slots;
        while (t[i].key) i = (i + 1) % slots;
        t[i].key = k;
        t[i].value = k * 7 + 3;
    }
    printf("{\"what\": \"ht-build\", \"keys\": %lu}\n", keys);
}

static void ht_lookup(const char *name, uint64_t keys, int secs) {
    uint64_t slots = keys * 2, bad = 0, ops = 0;
    struct slot *t = (struct slot *)open_segment(name, 0, 0, NULL);
    uint64_t t0 = now_ns();
    for (uint64_t k = 1; k <= keys; k++) {
        uint64_t i = mix(k) % slots;
        while (t[i].key != k && t[i].key) i = (i + 1) % slots;
        bad += t[i].value != k * 7 + 3;
    }
    double warm = (now_ns() - t0) / 1e9;
    uint64_t x = 88172645463325252ULL, end = now_ns() + (uint64_t)secs * 1000000000u;
    t0 = now_ns();
    while (now_ns() < end) {
        for (int n = 0; n < 4096; n++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint64_t k = x % keys + 1, i = mix(k) % slots;
            while (t[i].key != k && t[i].key) i = (i + 1) % slots;
            bad += t[i].value != k * 7 + 3;
        }
        ops += 4096;
    }
    double s = (now_ns() - t0) / 1e9;
    printf("{\"what\": \"ht-lookup\", \"keys\": %lu, \"warmup_s\": %.3f, \"ops_per_s\": %.0f, \"bad\": %lu}\n",
           keys, warm, ops / s, bad);
}

static void sync_setup(const char *name) {
    char *m = open_segment(name, 1, 3 * PAGE, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    if (pthread_mutex_init((pthread_mutex_t *)m, &ma)) die("pthread_mutex_init");
    pthread_barrierattr_t ba;
    pthread_barrierattr_init(&ba);
    pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
    if (pthread_barrier_init((pthread_barrier_t *)(m + PAGE), &ba, 2)) die("pthread_barrier_init");
}

/* Both roles start together (the barrier), then take the mutex as often as they can. */
static void lock_loop(const char *name, int role, int secs, int count) {
    char *m = open_segment(name, 0, 0, NULL);
    pthread_mutex_t *mutex = (pthread_mutex_t *)m;
    volatile uint64_t *counter = (uint64_t *)(m + 2 * PAGE);
    pthread_barrier_wait((pthread_barrier_t *)(m + PAGE));
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)secs * 1000000000u;
    long n = 0;
    while (now_ns() < end) {
        if (pthread_mutex_lock(mutex)) die("pthread_mutex_lock");
        n++;
        if (count) (*counter)++;
        pthread_mutex_unlock(mutex);
    }
    double s = (now_ns() - t0) / 1e9;
    printf("{\"what\": \"lock\", \"role\": %d, \"acquisitions\": %ld, \"per_s\": %.0f}\n", role, n, n / s);
}

static void lock_solo(const char *name, size_t n) {
    char *m = open_segment(name, 0, 0, NULL);
    pthread_mutex_t *mutex = (pthread_mutex_t *)m;
    uint64_t *ns = calloc(n, sizeof *ns);
    for (size_t i = 0; i < n; i++) {
        uint64_t t = now_ns();
        pthread_mutex_lock(mutex);
        pthread_mutex_unlock(mutex);
        ns[i] = now_ns() - t;
    }
    report("lock-solo", ns, n);
}

static void barrier_loop(const char *name, int role, long rounds) {
    char *m = open_segment(name, 0, 0, NULL);
    pthread_barrier_t *b = (pthread_barrier_t *)(m + PAGE);
    pthread_barrier_wait(b);
    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) pthread_barrier_wait(b);
    double s = (now_ns() - t0) / 1e9;
    if (role == 0) printf("{\"what\": \"barrier\", \"rounds\": %ld, \"per_s\": %.0f}\n", rounds, rounds / s);
}

/* Holds ever more scattered pages of a segment another node wrote (every other page, read
 * one by one: each is its own kernel mapping), and at each count in `marks` measures the next
 * 1,000 such faults and, as their floor, an mprotect toggling one private page in the same
 * process (what the kernel charges to split and merge a mapping among that many). */
static void held(const char *name, size_t most) {
    size_t size;
    char *m = open_segment(name, 0, 0, &size);
    size_t pages = size / PAGE;
    char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    priv[0] = priv[PAGE] = 1;
    static const size_t marks[] = {1000, 10000, 100000, 1000000};
    const size_t samples = 1000;
    uint64_t *ns = malloc(samples * sizeof *ns), *mp = malloc(samples * sizeof *mp);
    volatile char sink = 0;
    size_t next = 0;
    for (size_t k = 0; k < sizeof marks / sizeof *marks && marks[k] <= most; k++) {
        if (2 * (marks[k] + samples) > pages) break;
        for (; next < marks[k]; next++) sink += ((volatile char *)m)[2 * next * PAGE];
        for (size_t i = 0; i < samples; i++, next++) {
            uint64_t t0 = now_ns();
            sink += ((volatile char *)m)[2 * next * PAGE];
            ns[i] = now_ns() - t0;
            t0 = now_ns();
            mprotect(priv, PAGE, (i & 1) ? PROT_READ | PROT_WRITE : PROT_READ);
            mp[i] = now_ns() - t0;
        }
        char what[64];
        snprintf(what, sizeof what, "held-%zu", marks[k]);
        report(what, ns, samples);
        snprintf(what, sizeof what, "held-%zu-mprotect", marks[k]);
        report(what, mp, samples);
        fflush(stdout);
    }
    (void)sink;
}

/* mprotect of one private page, toggled between read and read-write (splitting and merging a
 * mapping) in a process that holds nothing else: figure 13a's mprotect floor. */
static void floor_mprotect(size_t n) {
    char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    priv[0] = priv[PAGE] = 1;
    uint64_t *ns = malloc(n * sizeof *ns);
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        mprotect(priv, PAGE, (i & 1) ? PROT_READ | PROT_WRITE : PROT_READ);
        ns[i] = now_ns() - t0;
    }
    report("floor-mprotect", ns, n);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: see the comment at the top of dsmbench.c\n"); return 2; }
    const char *mode = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "first")) touch("first-touch", open_segment(argv[2], 1, atol(argv[3]) * PAGE, NULL), atol(argv[3]), 1);
    else if (!strcmp(mode, "read")) touch(argc > 4 ? argv[4] : "read", open_segment(argv[2], 0, 0, NULL), atol(argv[3]), 0);
    else if (!strcmp(mode, "write")) touch(argc > 4 ? argv[4] : "write", open_segment(argv[2], 0, 0, NULL), atol(argv[3]), 1);
    else if (!strcmp(mode, "fill")) { size_t n = atol(argv[3]); char *m = open_segment(argv[2], 1, n, NULL); memset(m, 7, n); }
    else if (!strcmp(mode, "scan")) scan(argv[2]);
    else if (!strcmp(mode, "write-msync")) write_msync(argv[2], atol(argv[3]));
    else if (!strcmp(mode, "write-file")) write_file(argv[2], atol(argv[3]));
    else if (!strcmp(mode, "pingpong")) pingpong(argv[2], atoi(argv[3]), atoi(argv[4]));
    else if (!strcmp(mode, "create")) open_segment(argv[2], 1, strtoull(argv[3], NULL, 0), NULL);
    else if (!strcmp(mode, "random")) random_touch(argv[2], atol(argv[3]), atol(argv[4]), !strcmp(argv[5], "write"));
    else if (!strcmp(mode, "ht-build")) ht_build(argv[2], strtoull(argv[3], NULL, 0));
    else if (!strcmp(mode, "ht-lookup")) ht_lookup(argv[2], strtoull(argv[3], NULL, 0), atoi(argv[4]));
    else if (!strcmp(mode, "sync-setup")) sync_setup(argv[2]);
    else if (!strcmp(mode, "lock")) lock_loop(argv[2], atoi(argv[3]), atoi(argv[4]), 0);
    else if (!strcmp(mode, "lock-count")) lock_loop(argv[2], atoi(argv[3]), atoi(argv[4]), 1);
    else if (!strcmp(mode, "lock-solo")) lock_solo(argv[2], atol(argv[3]));
    else if (!strcmp(mode, "barrier")) barrier_loop(argv[2], atoi(argv[3]), atol(argv[4]));
    else if (!strcmp(mode, "held")) held(argv[2], atol(argv[3]));
    else if (!strcmp(mode, "fill-alternate")) {
        size_t n = atol(argv[3]);
        char *m = open_segment(argv[2], 1, n * PAGE, NULL);
        for (size_t p = 0; p < n; p += 2) m[p * PAGE] = 7;
    }
    else if (!strcmp(mode, "floor-fault")) floor_fault(atol(argv[2]));
    else if (!strcmp(mode, "floor-mprotect")) floor_mprotect(atol(argv[2]));
    else if (!strcmp(mode, "floor-unix")) floor_unix(atol(argv[2]), 0);
    else if (!strcmp(mode, "floor-unix-2cpu")) floor_unix(atol(argv[2]), 1);
    else if (!strcmp(mode, "floor-tcp")) floor_tcp(atol(argv[2]));
    else if (!strcmp(mode, "floor-tcp-bw")) floor_tcp_bw(atoi(argv[2]));
    else if (!strcmp(mode, "floor-memfd")) floor_memfd(atol(argv[2]));
    else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    return 0;
}
