/* What glibc's calls return, to be compared line by line with and without the shim (issue 9):
 * descriptor numbers, name lengths, the descriptor limit, huge mappings. Each line: case,
 * return value (or "ok"), errno name. */
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include "common.h"

static const char *en(int e) {
    switch (e) {
    case 0: return "0";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EMFILE: return "EMFILE";
    case ENOENT: return "ENOENT";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case EFBIG: return "EFBIG";
    default: return strerror(e);
    }
}

static char *name_of(const char *prefix, size_t len) {
    static char buf[8192];
    size_t p = strlen(prefix);
    memcpy(buf, prefix, p);
    for (size_t i = p; i < len + 1; i++) buf[i] = 'n';
    buf[len + 1] = 0; /* the leading '/' is not counted */
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: errnos PREFIX\n"); return 2; }
    const char *prefix = argv[1];
    char name[300];

    /* The first shm_open gets the lowest free descriptor, as open does. */
    int probe = open("/dev/null", O_RDONLY);
    close(probe);
    snprintf(name, sizeof name, "%s-fd", prefix);
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    printf("first-fd-is-lowest %d\n", fd == probe);
    ftruncate(fd, 4096);

    /* Names: 255 bytes work (tmpfs's limit), 256 and 4096 are ENAMETOOLONG. */
    char *n255 = name_of(prefix, 255);
    errno = 0;
    int f = shm_open(n255, O_CREAT | O_EXCL | O_RDWR, 0600);
    int ok = f >= 0 && ftruncate(f, 4096) == 0 && mmap(NULL, 4096, PROT_READ, MAP_SHARED, f, 0) != MAP_FAILED;
    printf("name-255 %s %s\n", ok ? "ok" : "fail", en(ok ? 0 : errno));
    int r;
#define TRY(label, call) do { errno = 0; r = (call); printf("%s %d %s\n", label, r, en(errno)); } while (0)
    TRY("unlink-255", shm_unlink(n255));
    TRY("name-256", shm_open(name_of(prefix, 256), O_CREAT | O_RDWR, 0600));
    TRY("name-4096", shm_open(name_of(prefix, 4096), O_CREAT | O_RDWR, 0600));

    /* A mapping far larger than any address space: ENOMEM. */
    errno = 0;
    void *m = mmap(NULL, 1ul << 50, PROT_READ, MAP_SHARED, fd, 0);
    printf("huge-mmap %s %s\n", m == MAP_FAILED ? "failed" : "mapped", en(m == MAP_FAILED ? errno : 0));

    /* At the descriptor limit: EMFILE, and no name left behind. */
    int lowest = open("/dev/null", O_RDONLY);
    close(lowest);
    struct rlimit old, lim;
    getrlimit(RLIMIT_NOFILE, &old);
    lim = old;
    lim.rlim_cur = lowest;
    setrlimit(RLIMIT_NOFILE, &lim);
    snprintf(name, sizeof name, "%s-limit", prefix);
    TRY("at-limit", shm_open(name, O_CREAT | O_RDWR, 0600));
    setrlimit(RLIMIT_NOFILE, &old);
    TRY("left-behind", shm_open(name, O_RDWR, 0600) >= 0);

    snprintf(name, sizeof name, "%s-fd", prefix);
    shm_unlink(name);
    return 0;
}
