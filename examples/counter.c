/* Adds to a counter in POSIX shared memory with an atomic instruction, then waits until every
 * process has done its share. Knows nothing of dsm.
 * usage: counter NAME PROCESSES ADDS */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "/counter";
    long processes = argc > 2 ? atol(argv[2]) : 1, adds = argc > 3 ? atol(argv[3]) : 1000;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("shm_open"); return 1; }
    if (ftruncate(fd, 4096) < 0) { perror("ftruncate"); return 1; }
    long *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (counter == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 0; i < adds; i++) __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
    time_t deadline = time(NULL) + 30;
    long want = processes * adds, seen;
    while ((seen = __atomic_load_n(counter, __ATOMIC_SEQ_CST)) < want && time(NULL) < deadline)
        sched_yield();
    printf("pid %d: counter is %ld (want %ld)\n", getpid(), seen, want);
    return seen == want ? 0 : 1;
}
