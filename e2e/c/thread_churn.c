/* Starts and ends many more threads than the shim's per-thread channel table holds (512), each
 * faulting a page of its own, then counts the process's open descriptors: channels of dead
 * threads are reused, so they stay few.
 * usage: thread_churn NAME THREADS */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static char *mem;

static void *touch(void *arg) {
    long i = (long)arg;
    mem[i * 4096] = (char)i;
    return NULL;
}

int main(int argc, char **argv) {
    long threads = atol(argv[2]);
    int fd = shm_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, threads * 4096) < 0) { perror("setup"); return 1; }
    mem = mmap(NULL, threads * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, touch, (void *)i) != 0) { perror("pthread_create"); return 1; }
        pthread_join(t, NULL);
    }
    long bad = 0;
    for (long i = 0; i < threads; i++) bad += mem[i * 4096] != (char)i;
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    while (readdir(d)) fds++;
    closedir(d);
    printf("%ld threads, %ld bad pages, %d descriptors open\n", threads, bad, fds - 2);
    shm_unlink(argv[1]);
    return bad != 0;
}
