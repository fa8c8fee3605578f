/* System calls and stdio on DSM memory, across two nodes (issue 9, part 1).
 *
 *   kernel_io NAME DIR producer   node 1: creates the segment, fills the OUT region with a
 *                                 pattern, then waits for the consumer's input and checks every
 *                                 byte the kernel wrote into DSM memory on node 2; meanwhile it
 *                                 writes into the page node 2 is blocked in recv on.
 *   kernel_io NAME DIR consumer   node 2: writes files from DSM pages it never touched (write,
 *                                 pwrite, writev, fwrite 64 KiB and 1 MiB, fprintf of a 200 KiB
 *                                 string, send), checks them, then reads files and a socket into
 *                                 DSM memory (read, pread, readv, fread buffered and unbuffered,
 *                                 fgets, recv), blocks in recv on a page node 1 writes, and
 *                                 preads and pwrites the segment's own descriptor.
 *
 * Layout: OUT at 0 (2 MiB of pattern with a NUL at STR_LEN), IN at 4 MiB (what node 2 reads in),
 * control words at 8 MiB, the recv page at 8 MiB + 4096. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

#define SIZE (9u << 20)
#define OUT 0
#define OUT_LEN (2u << 20)
#define STR_LEN (200u << 10)
#define IN (4u << 20)
#define CTRL (8u << 20)
#define RECV_PAGE (CTRL + 4096)

enum { IN_READ = 0, IN_PREAD = 1, IN_READV = 2, IN_FREAD = 3, IN_FREAD_UNBUF = 4, IN_FGETS = 5,
       IN_RECV = 6, IN_SLOTS = 7 };
#define SLOT_LEN (256u << 10)

static unsigned char pat(size_t i) { return i == STR_LEN ? 0 : 'a' + (i * 7 + i / 4096) % 26; }
static unsigned char in_pat(size_t i) { return 'A' + (i * 11 + i / 999) % 26; }

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } } while (0)

static long *ctrl(unsigned char *p, int i) { return (long *)(p + CTRL) + i; }
static void wait_flag(unsigned char *p, int i, long v) {
    for (long n = 0; __atomic_load_n(ctrl(p, i), __ATOMIC_ACQUIRE) != v; n++) {
        CHECK(n < 200000, "timed out waiting for flag %d", i);
        usleep(100);
    }
}

static char *path(const char *dir, const char *f) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", dir, f);
    return b;
}

/* The file holds `len` bytes equal to the pattern from `from`. */
static void check_file(const char *file, size_t from, size_t len) {
    FILE *f = fopen(file, "rb");
    CHECK(f, "open %s: %s", file, strerror(errno));
    unsigned char *buf = malloc(len + 1);
    size_t got = fread(buf, 1, len + 1, f);
    fclose(f);
    CHECK(got == len, "%s has %zu bytes, want %zu", file, got, len);
    for (size_t i = 0; i < len; i++)
        CHECK(buf[i] == pat(from + i), "%s byte %zu is %d, want %d", file, i, buf[i], pat(from + i));
    free(buf);
}

static void make_input(const char *file, size_t len, int lines) {
    FILE *f = fopen(file, "wb");
    CHECK(f, "create %s", file);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in_pat(i);
        if (lines && i % 100 == 99) c = '\n';
        fputc(c, f);
    }
    fclose(f);
}

static void consumer(unsigned char *p, const char *name, const char *dir) {
    /* Output from pages this process never touched. */
    int fd = open(path(dir, "write"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(write(fd, p + OUT, 65536) == 65536, "write: %s", strerror(errno));
    close(fd);
    check_file(path(dir, "write"), 0, 65536);

    fd = open(path(dir, "pwrite"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(pwrite(fd, p + OUT + 65536, 65536, 0) == 65536, "pwrite: %s", strerror(errno));
    close(fd);
    check_file(path(dir, "pwrite"), 65536, 65536);

    char priv[100];
    for (int i = 0; i < 100; i++) priv[i] = pat(4096 * 3 + i);
    struct iovec iov[3] = {{p + OUT + 4096, 4096}, {p + OUT + 8192, 4096}, {priv, 100}};
    fd = open(path(dir, "writev"), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(writev(fd, iov, 3) == 8292, "writev: %s", strerror(errno));
    close(fd);
    check_file(path(dir, "writev"), 4096, 8292);

    FILE *f = fopen(path(dir, "fwrite"), "wb");
    CHECK(fwrite(p + OUT, 1, 65536, f) == 65536, "fwrite 64 KiB: %s", strerror(errno));
    CHECK(fwrite(p + OUT + 65536, 1, OUT_LEN - 65536, f) == OUT_LEN - 65536, "fwrite 2 MiB: %s",
          strerror(errno));
    CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
    check_file(path(dir, "fwrite"), 0, OUT_LEN);

    f = fopen(path(dir, "fprintf"), "wb");
    CHECK(fprintf(f, "%s", (char *)p + OUT) == (int)STR_LEN, "fprintf %%s: %s", strerror(errno));
    CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
    check_file(path(dir, "fprintf"), 0, STR_LEN);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    CHECK(send(sv[0], p + OUT + 3 * 4096, 3000, 0) == 3000, "send: %s", strerror(errno));
    char got[3000];
    CHECK(recv(sv[1], got, 3000, MSG_WAITALL) == 3000, "recv private");
    for (int i = 0; i < 3000; i++) CHECK((unsigned char)got[i] == pat(3 * 4096 + i), "send byte %d", i);

    /* sendmsg from DSM memory, recvmsg into private memory; fputs of a DSM string. */
    struct iovec mv[2] = {{p + OUT + 10 * 4096, 1000}, {p + OUT + 11 * 4096, 1000}};
    struct msghdr mh = {.msg_iov = mv, .msg_iovlen = 2};
    CHECK(sendmsg(sv[0], &mh, 0) == 2000, "sendmsg: %s", strerror(errno));
    char mgot[2000];
    CHECK(recv(sv[1], mgot, 2000, MSG_WAITALL) == 2000, "recv of sendmsg");
    for (int i = 0; i < 1000; i++)
        CHECK((unsigned char)mgot[i] == pat(10 * 4096 + i) && (unsigned char)mgot[1000 + i] == pat(11 * 4096 + i),
              "sendmsg byte %d", i);
    f = fopen(path(dir, "fputs"), "wb");
    setvbuf(f, NULL, _IONBF, 0);
    CHECK(fputs((char *)p + OUT + 100 * 1024, f) >= 0, "fputs unbuffered: %s", strerror(errno));
    fclose(f);
    check_file(path(dir, "fputs"), 100 * 1024, STR_LEN - 100 * 1024);

    /* Input into DSM memory, checked by node 1. */
    make_input(path(dir, "in"), SLOT_LEN, 0);
    make_input(path(dir, "lines"), SLOT_LEN, 1);
    unsigned char *in = p + IN;
    fd = open(path(dir, "in"), O_RDONLY);
    CHECK(read(fd, in + IN_READ * SLOT_LEN, SLOT_LEN) == SLOT_LEN, "read: %s", strerror(errno));
    CHECK(pread(fd, in + IN_PREAD * SLOT_LEN, SLOT_LEN, 0) == SLOT_LEN, "pread: %s", strerror(errno));
    struct iovec riov[2] = {{in + IN_READV * SLOT_LEN, 1000}, {in + IN_READV * SLOT_LEN + 1000, SLOT_LEN - 1000}};
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    CHECK(readv(fd, riov, 2) == SLOT_LEN, "readv: %s", strerror(errno));
    close(fd);
    f = fopen(path(dir, "in"), "rb");
    CHECK(fread(in + IN_FREAD * SLOT_LEN, 1, SLOT_LEN, f) == SLOT_LEN, "fread: %s", strerror(errno));
    fclose(f);
    f = fopen(path(dir, "in"), "rb");
    setvbuf(f, NULL, _IONBF, 0);
    CHECK(fread(in + IN_FREAD_UNBUF * SLOT_LEN, 1, SLOT_LEN, f) == SLOT_LEN, "fread unbuffered: %s",
          strerror(errno));
    fclose(f);
    f = fopen(path(dir, "lines"), "rb");
    for (size_t at = 0; at < SLOT_LEN;) {
        char *line = (char *)in + IN_FGETS * SLOT_LEN + at;
        CHECK(fgets(line, 101, f) == line, "fgets at %zu", at);
        at += strlen(line);
    }
    fclose(f);
    unsigned char *src = malloc(SLOT_LEN);
    for (size_t i = 0; i < SLOT_LEN; i++) src[i] = in_pat(i);
    pid_t pid = fork();
    if (pid == 0) {
        size_t sent = 0;
        while (sent < SLOT_LEN) sent += write(sv[0], src + sent, SLOT_LEN - sent);
        _exit(0);
    }
    CHECK(recv(sv[1], in + IN_RECV * SLOT_LEN, SLOT_LEN, MSG_WAITALL) == SLOT_LEN, "recv: %s", strerror(errno));
    waitpid(pid, NULL, 0);
    /* recvmsg into two DSM buffers. */
    CHECK(send(sv[0], src, 3000, 0) == 3000, "send for recvmsg");
    struct iovec gv[2] = {{p + (7u << 20), 1000}, {p + (7u << 20) + 8192, 2000}};
    struct msghdr gh = {.msg_iov = gv, .msg_iovlen = 2};
    CHECK(recvmsg(sv[1], &gh, MSG_WAITALL) == 3000, "recvmsg into DSM: %s", strerror(errno));
    for (int i = 0; i < 1000; i++) CHECK(p[(7u << 20) + i] == in_pat(i), "recvmsg byte %d", i);
    for (int i = 0; i < 2000; i++) CHECK(p[(7u << 20) + 8192 + i] == in_pat(1000 + i), "recvmsg byte %d", 1000 + i);

    /* A recv that blocks on a page node 1 writes meanwhile: coherence goes on around it. */
    p[RECV_PAGE] = 1; /* this node owns the page, writable */
    __atomic_store_n(ctrl(p, 0), 1, __ATOMIC_RELEASE); /* input done; recv about to block */
    pid = fork();
    if (pid == 0) {
        wait_flag(p, 1, 1); /* node 1 wrote into the page */
        sleep(2); /* the recv stays blocked 2 s after node 1 wrote into its page */
        CHECK(send(sv[0], "hello from the socket", 21, 0) == 21, "send");
        _exit(0);
    }
    CHECK(recv(sv[1], p + RECV_PAGE, 21, 0) == 21, "blocked recv: %s", strerror(errno));
    waitpid(pid, NULL, 0);

    /* pread and pwrite on the segment's own descriptor see and make the coherent bytes. */
    int sfd = shm_open(name, O_RDWR, 0);
    CHECK(sfd >= 0, "shm_open: %s", strerror(errno));
    unsigned char b[100];
    CHECK(pread(sfd, b, 100, OUT + 5 * 4096) == 100, "pread: %s", strerror(errno));
    for (int i = 0; i < 100; i++) CHECK(b[i] == pat(5 * 4096 + i), "pread byte %d", i);
    CHECK(pread(sfd, b, 1, RECV_PAGE + 2048) == 1 && b[0] == 42, "pread missed node 1's write (%d)", b[0]);
    CHECK(pwrite(sfd, "pwrite through the fd", 21, CTRL + 2048) == 21, "pwrite: %s", strerror(errno));
    CHECK(pread(sfd, b, 10, SIZE - 5) == 5, "pread at the end");
    /* read and write at the descriptor's file position, through a dup'd copy too. */
    CHECK(lseek(sfd, CTRL + 3000, SEEK_SET) == CTRL + 3000, "lseek");
    CHECK(write(sfd, "seq write", 9) == 9, "write on the descriptor: %s", strerror(errno));
    CHECK(lseek(sfd, 0, SEEK_CUR) == CTRL + 3009, "the position did not advance");
    int copy = dup(sfd);
    CHECK(pread(copy, b, 9, CTRL + 3000) == 9 && memcmp(b, "seq write", 9) == 0, "pread of the dup");
    CHECK(lseek(copy, OUT + 6 * 4096, SEEK_SET) >= 0 && read(copy, b, 50) == 50, "read: %s", strerror(errno));
    for (int i = 0; i < 50; i++) CHECK(b[i] == pat(6 * 4096 + i), "read byte %d", i);
    close(copy);
    /* The vectored forms on the descriptor. */
    struct iovec wv[2] = {{"vec", 3}, {"tor", 3}};
    CHECK(pwritev(sfd, wv, 2, CTRL + 3200) == 6, "pwritev on the descriptor: %s", strerror(errno));
    char r1[2], r2[4];
    struct iovec rv[2] = {{r1, 2}, {r2, 4}};
    CHECK(preadv(sfd, rv, 2, CTRL + 3200) == 6 && memcmp(r1, "ve", 2) == 0 && memcmp(r2, "ctor", 4) == 0,
          "preadv on the descriptor");
    /* pread from the segment into DSM memory itself (another part of it). */
    CHECK(pread(sfd, p + (6u << 20), 8192, OUT + 9 * 4096) == 8192, "pread into DSM memory: %s", strerror(errno));
    for (int i = 0; i < 8192; i++) CHECK(p[(6u << 20) + i] == pat(9 * 4096 + i), "pread into DSM byte %d", i);
    close(sfd);

    /* fopen of the /dev/shm path is the segment too (glibc's fopen opens internally). */
    char dev[300];
    snprintf(dev, sizeof dev, "/dev/shm%s", name);
    FILE *sf = fopen(dev, "r+");
    CHECK(sf, "fopen %s: %s", dev, strerror(errno));
    unsigned char *q = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fileno(sf), 0);
    CHECK(q != MAP_FAILED, "mmap of fopen's descriptor: %s", strerror(errno));
    CHECK(q != p && q[OUT + 7 * 4096] == pat(7 * 4096), "fopen's descriptor is not the segment");
    /* stdio on the stream reads and writes the segment (glibc's internal reads and writes). */
    CHECK(fseek(sf, OUT + 8 * 4096, SEEK_SET) == 0, "fseek");
    CHECK(fread(b, 1, 100, sf) == 100, "fread of the stream: %s", strerror(errno));
    for (int i = 0; i < 100; i++) CHECK(b[i] == pat(8 * 4096 + i), "fread byte %d", i);
    CHECK(fseek(sf, CTRL + 3100, SEEK_SET) == 0 && fputs("stdio write", sf) >= 0 && fflush(sf) == 0,
          "fputs to the stream: %s", strerror(errno));
    fclose(sf);
    __atomic_store_n(ctrl(p, 2), 1, __ATOMIC_RELEASE);
    printf("consumer done\n");
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void producer(unsigned char *p) {
    for (size_t i = 0; i < OUT_LEN; i++) p[OUT + i] = pat(i);
    __atomic_store_n(ctrl(p, 3), 1, __ATOMIC_RELEASE); /* filled */
    wait_flag(p, 0, 1);
    unsigned char *in = p + IN;
    for (int s = 0; s < IN_SLOTS; s++) {
        for (size_t i = 0; i < SLOT_LEN; i++) {
            unsigned char want = in_pat(i);
            if (s == IN_FGETS && i % 100 == 99) want = '\n';
            CHECK(in[s * SLOT_LEN + i] == want, "slot %d byte %zu is %d, want %d", s, i,
                  in[s * SLOT_LEN + i], want);
        }
    }
    /* Node 2 is blocked in recv into RECV_PAGE: this write must not wait for it. */
    double t0 = now();
    p[RECV_PAGE + 2048] = 42;
    double took = now() - t0;
    CHECK(took < 1.0, "writing the page took %.3f s: the blocked recv held it", took);
    __atomic_store_n(ctrl(p, 1), 1, __ATOMIC_RELEASE);
    wait_flag(p, 2, 1);
    CHECK(memcmp(p + RECV_PAGE, "hello from the socket", 21) == 0, "recv bytes lost");
    CHECK(p[RECV_PAGE + 2048] == 42, "node 1's write into the recv page was lost");
    CHECK(memcmp(p + CTRL + 2048, "pwrite through the fd", 21) == 0, "node 2's pwrite not seen");
    CHECK(memcmp(p + CTRL + 3000, "seq write", 9) == 0, "node 2's write on the descriptor not seen");
    CHECK(memcmp(p + CTRL + 3100, "stdio write", 11) == 0, "node 2's stdio write not seen");
    printf("producer done (write during blocked recv took %.1f ms)\n", took * 1e3);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: kernel_io NAME DIR producer|consumer\n"); return 2; }
    int prod = strcmp(argv[3], "producer") == 0;
    unsigned char *p = open_segment(argv[1], prod ? 0 : 1, SIZE);
    if (prod) {
        producer(p);
    } else {
        wait_flag(p, 3, 1);
        consumer(p, argv[1], argv[2]);
    }
    return 0;
}
