/* SysV shared memory across hosts (issue 9): a key means one segment cluster-wide, a shmid
 * (even of an IPC_PRIVATE segment) attaches the same segment on any node, IPC_STAT/IPC_RMID.
 *
 *   sysv KEY producer   node 1
 *   sysv KEY consumer   node 2 (own IPC namespace: the kernel's SysV cannot share) */
#include <errno.h>
#include <string.h>
#include <sys/shm.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)
#define SIZE 65536

static void wait_for(volatile long *flag, long v) {
    for (int n = 0; __atomic_load_n(flag, __ATOMIC_ACQUIRE) != v; n++) {
        CHECK(n < 60000, "timed out");
        usleep(1000);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: sysv KEY producer|consumer\n"); return 2; }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    if (!strcmp(argv[2], "producer")) {
        int id = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600);
        CHECK(id >= 0, "shmget: %s", strerror(errno));
        CHECK(shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0600) == -1 && errno == EEXIST, "IPC_EXCL twice");
        CHECK(shmget(key, 2 * SIZE, 0) == -1 && errno == EINVAL, "a larger size than the segment's");
        long *p = shmat(id, NULL, 0);
        CHECK(p != (void *)-1, "shmat: %s", strerror(errno));
        for (int i = 8; i < SIZE / 8; i++) p[i] = i * 3;
        int priv = shmget(IPC_PRIVATE, 4096, 0600);
        CHECK(priv >= 0, "shmget IPC_PRIVATE: %s", strerror(errno));
        long *q = shmat(priv, NULL, 0);
        CHECK(q != (void *)-1, "shmat private: %s", strerror(errno));
        q[0] = 99;
        p[2] = priv;
        __atomic_store_n(&p[0], 1, __ATOMIC_RELEASE);
        wait_for(&p[1], 1);
        struct shmid_ds ds;
        CHECK(shmctl(id, IPC_STAT, &ds) == 0, "IPC_STAT: %s", strerror(errno));
        CHECK(ds.shm_segsz == SIZE && ds.shm_nattch >= 1 && ds.shm_perm.__key == key,
              "IPC_STAT: size %zu nattch %lu key %d", ds.shm_segsz, (unsigned long)ds.shm_nattch, ds.shm_perm.__key);
        CHECK(p[3] == 4242, "the consumer's write did not arrive");
        CHECK(shmctl(id, IPC_RMID, NULL) == 0, "IPC_RMID: %s", strerror(errno));
        CHECK(shmget(key, 0, 0) == -1 && errno == ENOENT, "the key survived IPC_RMID");
        CHECK(p[3] == 4242, "removed while attached: the memory must stay");
        CHECK(shmdt(p) == 0 && shmdt(q) == 0, "shmdt: %s", strerror(errno));
        CHECK(shmdt(p) == -1 && errno == EINVAL, "shmdt twice");
        shmctl(priv, IPC_RMID, NULL);
        printf("producer ok\n");
        return 0;
    }
    int id = -1;
    for (int n = 0; id < 0; n++) {
        CHECK(n < 30000, "the key never appeared: %s", strerror(errno));
        id = shmget(key, 0, 0);
        if (id < 0) usleep(1000);
    }
    long *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1, "shmat: %s", strerror(errno));
    wait_for(&p[0], 1);
    for (int i = 8; i < SIZE / 8; i++) CHECK(p[i] == i * 3, "word %d is %ld", i, p[i]);
    long *q = shmat((int)p[2], NULL, SHM_RDONLY);
    CHECK(q != (void *)-1, "shmat of the private id: %s", strerror(errno));
    CHECK(q[0] == 99, "the private segment reads %ld", q[0]);
    p[3] = 4242;
    __atomic_store_n(&p[1], 1, __ATOMIC_RELEASE);
    printf("consumer ok\n");
    return 0;
}
