/* Two live processes (started separately, not forked) share a page: they take turns through
 * a flag, each seeing the other's stores.
 * usage: sharing NAME ROLE ROUNDS   (ROLE 0 creates and goes first, ROLE 1 opens) */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int role = atoi(argv[2]);
    long rounds = atol(argv[3]);
    int fd = -1;
    for (int i = 0; i < 2000 && fd < 0; i++) {
        fd = shm_open(argv[1], role == 0 ? O_CREAT | O_RDWR : O_RDWR, 0600);
        if (fd < 0) usleep(5000);
    }
    if (fd < 0) { perror("shm_open"); return 1; }
    if (role == 0 && ftruncate(fd, 8192) < 0) { perror("ftruncate"); return 1; }
    volatile long *mem = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (long r = 0; r < rounds; r++) {
        long turn = 2 * r + role;              /* whose turn: even = role 0, odd = role 1 */
        while (__atomic_load_n(&mem[0], __ATOMIC_ACQUIRE) != turn) sched_yield();
        mem[512 + role] = turn;                /* second page: data written on our turn */
        if (role == 1 && mem[512] != turn - 1) { printf("stale data\n"); return 2; }
        __atomic_store_n(&mem[0], turn + 1, __ATOMIC_RELEASE);
    }
    printf("role %d done after %ld rounds\n", role, rounds);
    return 0;
}
