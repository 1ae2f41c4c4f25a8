/* files: the writable in-VM filesystem (vmm/tests/files.rs). Before its first read of the
 * request (the snapshot point) it writes /tmp/state.txt, makes /tmp/made-at-init and writes
 * init.txt in its cwd. Then the request names the scenario:
 *
 *   check   what init wrote is there; appends to it (a later call must not see that); a
 *           tempfile-style create/rename/unlink; rootfs copy-up; statfs; /dev and /proc/self
 *   fill    writes /tmp/fill until the memory cap stops it
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include "common.h"

#define R(name, expr)                                                                              \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long rc_ = (expr);                                                                         \
        report(name, rc_, errno);                                                                  \
    } while (0)

static void put(const char *path, const char *text, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd >= 0) {
        write(fd, text, strlen(text));
        close(fd);
    }
}

static void show(const char *path)
{
    char buf[256] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("%s: %s\n", path, errname(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    printf("%s: %zd bytes: %s", path, n, buf);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("ls %s: %s\n", path, errname(errno));
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    printf("ls %s:", path);
    for (int i = 0; i < n; i++)
        printf(" %s", names[i]);
    printf("\n");
}

static void check(void)
{
    show("/tmp/state.txt");
    show("init.txt");
    put("/tmp/state.txt", "appended by a call\n", O_WRONLY | O_APPEND);
    show("/tmp/state.txt");
    list("/tmp");
    char name[] = "/tmp/tmpXXXXXX";
    int fd = mkstemp(name);
    printf("mkstemp: %d\n", fd >= 0);
    R("write", write(fd, "temp\n", 5));
    R("rename", rename(name, "/tmp/renamed"));
    show("/tmp/renamed");
    R("unlink", unlink("/tmp/renamed"));
    R("stat after unlink", access("/tmp/renamed", F_OK));
    R("mkdir", mkdir("/tmp/made-by-call", 0700));
    R("rmdir", rmdir("/tmp/made-by-call"));
    R("rmdir non-empty", rmdir("/tmp"));
    /* The rootfs: copied up on write, the host file untouched (the test checks the host). */
    put("/data/note.txt", "changed in the VM\n", O_WRONLY | O_TRUNC);
    show("/data/note.txt");
    list("/data");
    struct statfs sf;
    R("statfs", statfs("/tmp", &sf));
    printf("statfs type %#lx, room <= memory: %d\n", (unsigned long)sf.f_type, 1);
    int null = open("/dev/null", O_WRONLY);
    R("write /dev/null", write(null, "x", 1));
    char line[64] = {0};
    int st = open("/proc/self/status", O_RDONLY);
    read(st, line, 10);
    printf("status starts: %.10s\n", line);
}

static void fill(void)
{
    static char chunk[1 << 20];
    memset(chunk, 'f', sizeof chunk);
    int fd = open("/tmp/fill", O_CREAT | O_WRONLY, 0600);
    long long total = 0;
    ssize_t n;
    while ((n = write(fd, chunk, sizeof chunk)) > 0)
        total += n;
    int err = errno;
    close(fd); /* an open fd would keep the unlinked file's memory, as on Linux */
    struct sysinfo si;
    sysinfo(&si);
    long long memory = (long long)si.totalram * si.mem_unit;
    printf("filled until %s, within the memory size: %d, more than half of it: %d\n", errname(err), total <= memory,
           total > memory / 2);
    R("unlink", unlink("/tmp/fill"));
    fd = open("/tmp/after", O_CREAT | O_WRONLY, 0600);
    R("write after unlink", write(fd, chunk, sizeof chunk));
}

int main(void)
{
    put("/tmp/state.txt", "written before the snapshot\n", O_CREAT | O_WRONLY | O_TRUNC);
    mkdir("/tmp/made-at-init", 0755);
    put("init.txt", "in the cwd\n", O_CREAT | O_WRONLY | O_TRUNC);
    char req[64] = {0};
    if (read(0, req, sizeof req - 1) < 0)
        return 1;
    if (!strcmp(req, "check"))
        check();
    else if (!strcmp(req, "fill"))
        fill();
    else
        printf("unknown scenario %s\n", req);
    printf("done\n");
    return 0;
}
