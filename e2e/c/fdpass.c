/* A segment's descriptor that did not come from shm_open is still the segment (issue 9):
 *
 *   fdpass NAME producer      node 1: creates the segment, writes a value, waits until both
 *                             other processes wrote theirs
 *   fdpass NAME sender        node 2: opens it, passes the descriptor over a Unix socket
 *                             (SCM_RIGHTS) to a freshly exec'd receiver, then lets a second
 *                             exec'd child inherit it (FD_CLOEXEC cleared)
 *   fdpass NAME receiver FD   reads the value through the passed descriptor's mapping, writes
 *   fdpass NAME inherited FD  likewise, through the inherited descriptor */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "common.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

static void spawn(char *self, const char *name, const char *role, int fd) {
    char arg[16];
    snprintf(arg, sizeof arg, "%d", fd);
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, name, role, arg, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed (%d)", role, st);
}

static void use(int fd, int slot) {
    long *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED, "mmap of a %s descriptor: %s", slot == 1 ? "passed" : "inherited", strerror(errno));
    CHECK(p[0] == 0x1234, "read %lx through the %s descriptor: not the segment", p[0],
          slot == 1 ? "passed" : "inherited");
    __atomic_store_n(&p[slot], 1, __ATOMIC_RELEASE);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: fdpass NAME producer|sender|receiver FD|inherited FD\n"); return 2; }
    const char *name = argv[1], *role = argv[2];
    if (!strcmp(role, "producer")) {
        long *p = open_segment(name, 0, 8192);
        __atomic_store_n(&p[0], 0x1234, __ATOMIC_RELEASE);
        /* Once the sender is about to pass the descriptor, change the page: node 2's copy is
         * now stale, and the receiver's read() must not see it. */
        for (int i = 0; i < 20000 && !__atomic_load_n(&p[5], __ATOMIC_ACQUIRE); i++) usleep(1000);
        p[4] = 0x5678;
        __atomic_store_n(&p[6], 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 20000 && !(__atomic_load_n(&p[1], __ATOMIC_ACQUIRE) && __atomic_load_n(&p[2], __ATOMIC_ACQUIRE)); i++)
            usleep(1000);
        CHECK(p[1] == 1, "the receiver's write never arrived");
        CHECK(p[2] == 1, "the inheritor's write never arrived");
        printf("producer done\n");
        return 0;
    }
    if (!strcmp(role, "sender")) {
        long *p = open_segment(name, 1, 8192);
        while (__atomic_load_n(&p[0], __ATOMIC_ACQUIRE) != 0x1234) usleep(1000);
        int fd = shm_open(name, O_RDWR, 0);
        CHECK(fd >= 0, "shm_open: %s", strerror(errno));
        __atomic_store_n(&p[5], 1, __ATOMIC_RELEASE);
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
        CHECK(fcntl(sv[1], F_SETFD, 0) == 0, "fcntl");
        char byte = 'x';
        struct iovec iov = {&byte, 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
        CHECK(sendmsg(sv[0], &msg, 0) == 1, "sendmsg: %s", strerror(errno));
        spawn(argv[0], name, "receiver", sv[1]);
        CHECK(fcntl(fd, F_SETFD, 0) == 0, "fcntl");
        spawn(argv[0], name, "inherited", fd);
        printf("sender done\n");
        return 0;
    }
    int fd = atoi(argv[3]);
    if (!strcmp(role, "receiver")) {
        char byte;
        struct iovec iov = {&byte, 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        CHECK(recvmsg(fd, &msg, 0) == 1, "recvmsg: %s", strerror(errno));
        int passed;
        memcpy(&passed, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof passed);
        /* read() at the file position before any mmap: the segment's bytes, not this node's
         * stale copy. */
        long flag = 0, v = 0;
        for (int i = 0; i < 20000 && flag != 1; i++) {
            CHECK(pread(passed, &flag, 8, 6 * 8) == 8, "pread: %s", strerror(errno));
            if (flag != 1) usleep(1000);
        }
        CHECK(flag == 1, "pread of the passed descriptor never saw node 1's write");
        CHECK(lseek(passed, 4 * 8, SEEK_SET) == 32 && read(passed, &v, 8) == 8 && v == 0x5678,
              "read of the passed descriptor: %lx", v);
        use(passed, 1);
    } else {
        use(fd, 2);
    }
    return 0;
}
