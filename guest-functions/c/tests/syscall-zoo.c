/* syscall-zoo: exercise the syscalls the monitor emulates; one "name: result" line each.
 * Expects /data/hello.txt ("hello\n") in its rootfs (build.sh creates it). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

#define FILE_PATH "/data/hello.txt"

static void line(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(const char *name, const char *fmt, ...)
{
    va_list ap;
    printf("%s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    /* Consume the request first: a snapshot taken at the first read covers start-up only. */
    char rbuf[4096];
    while (read(0, rbuf, sizeof rbuf) > 0)
        ;

    /* fd 0 is the whole request as a read-only regular file. */
    struct stat st0;
    if (fstat(0, &st0) == 0)
        line("fstat(0)", "regular=%d st_size=%lld", S_ISREG(st0.st_mode), (long long)st0.st_size);
    else
        line("fstat(0)", "%s", errname(errno));
    line("lseek(0, SEEK_END)", "%lld", (long long)lseek(0, 0, SEEK_END));
    ssize_t pn = pread(0, rbuf, 3, 2);
    line("pread(0, 3, 2)", "%zd \"%.*s\"", pn, (int)(pn > 0 ? pn : 0), rbuf);
    errno = 0;
    off_t bad = lseek(0, -1, SEEK_SET);
    line("lseek(0, -1, SEEK_SET)", "%lld %s", (long long)bad, errname(errno));
    lseek(0, 1, SEEK_SET);
    ssize_t rn = read(0, rbuf, sizeof rbuf);
    line("read(0) after lseek(1)", "%zd \"%.*s\"", rn, (int)(rn > 0 ? rn : 0), rbuf);

    line("getpid", "%ld", (long)getpid());
    line("gettid", "%ld", (long)syscall(SYS_gettid));
    line("getppid", "%ld", (long)getppid());
    line("getuid", "%ld", (long)getuid());
    line("geteuid", "%ld", (long)geteuid());
    line("getgid", "%ld", (long)getgid());
    line("getegid", "%ld", (long)getegid());

    struct utsname u;
    if (uname(&u) == 0)
        line("uname", "%s", u.sysname);
    else
        line("uname", "%s", errname(errno));

    char cwd[4096];
    if (getcwd(cwd, sizeof cwd))
        line("getcwd", "%s", cwd);
    else
        line("getcwd", "%s", errname(errno));

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n >= 0) {
        exe[n] = 0;
        line("readlink(/proc/self/exe)", "%s", exe);
    } else {
        line("readlink(/proc/self/exe)", "%s", errname(errno));
    }

    struct stat st;
    if (stat(FILE_PATH, &st) == 0)
        line("stat", "st_size=%lld regular=%d", (long long)st.st_size, S_ISREG(st.st_mode));
    else
        line("stat", "%s", errname(errno));
    if (lstat(FILE_PATH, &st) == 0)
        line("lstat", "st_size=%lld", (long long)st.st_size);
    else
        line("lstat", "%s", errname(errno));
    if (stat("/data/missing", &st) != 0)
        line("stat(missing)", "%s", errname(errno));
    else
        line("stat(missing)", "exists?!");

    int fd = open(FILE_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        line("open", "%s", errname(errno));
    } else {
        line("open", "ok");
        if (fstat(fd, &st) == 0)
            line("fstat", "st_size=%lld", (long long)st.st_size);
        else
            line("fstat", "%s", errname(errno));
        char b[64] = {0};
        n = read(fd, b, sizeof b - 1);
        line("read", "%zd \"%.*s\"", n, (int)(n > 0 ? strcspn(b, "\n") : 0), b);
        n = read(fd, b, sizeof b - 1);
        line("read(eof)", "%zd", n);
        off_t o = lseek(fd, 1, SEEK_SET);
        n = read(fd, b, 2);
        line("lseek+read", "%lld \"%.*s\"", (long long)o, (int)(n > 0 ? n : 0), b);
        o = lseek(fd, 0, SEEK_END);
        line("lseek(SEEK_END)", "%lld", (long long)o);
        memset(b, 0, sizeof b);
        n = pread(fd, b, 3, 2);
        line("pread", "%zd \"%.*s\"", n, (int)(n > 0 ? n : 0), b);
        o = lseek(fd, 0, SEEK_CUR);
        line("lseek(SEEK_CUR) after pread", "%lld", (long long)o);

        int fd2 = dup(fd);
        line("dup", "%s", fd2 > fd ? "ok" : errname(errno));
        int fd3 = dup2(fd, 20);
        line("dup2", "%d", fd3 < 0 ? -errno : fd3);
        int flags = fcntl(fd, F_GETFD);
        line("fcntl(F_GETFD)", "%s", flags < 0 ? errname(errno) : (flags & FD_CLOEXEC) ? "FD_CLOEXEC" : "0");
        flags = fcntl(fd3, F_GETFD);
        line("fcntl(F_GETFD) dup2", "%s", flags < 0 ? errname(errno) : (flags & FD_CLOEXEC) ? "FD_CLOEXEC" : "0");
        if (fd2 >= 0)
            close(fd2);
        if (fd3 >= 0)
            close(fd3);
        line("close", "%d", close(fd));
        errno = 0;
        n = read(fd, b, 1);
        line("read(closed)", "%s", n < 0 ? errname(errno) : "succeeded?!");
    }

    DIR *d = opendir("/data");
    if (!d) {
        line("readdir(/data)", "%s", errname(errno));
    } else {
        char *names[256];
        int cnt = 0;
        struct dirent *e;
        while ((e = readdir(d)) && cnt < 256)
            names[cnt++] = strdup(e->d_name);
        closedir(d);
        qsort(names, (size_t)cnt, sizeof names[0], cmpstr);
        printf("readdir(/data):");
        for (int i = 0; i < cnt; i++) {
            printf(" %s", names[i]);
            free(names[i]);
        }
        printf("\n");
        fflush(stdout);
    }

    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
        line("clock_gettime(REALTIME)", "after2020=%d", ts.tv_sec > 1577836800L);
    else
        line("clock_gettime(REALTIME)", "%s", errname(errno));
    struct timespec m1, m2;
    clock_gettime(CLOCK_MONOTONIC, &m1);

    unsigned char rnd[16] = {0};
    n = getrandom(rnd, sizeof rnd, 0);
    int nonzero = 0;
    for (int i = 0; i < 16; i++)
        nonzero |= rnd[i];
    line("getrandom", "%zd nonzero=%d", n, nonzero != 0);

    struct termios t;
    errno = 0;
    int rc = ioctl(0, TCGETS, &t);
    line("ioctl(0, TCGETS)", "%s", rc < 0 ? errname(errno) : "0 (a tty?)");

    void *brk0 = sbrk(0);
    char *big = malloc(1 << 20);
    if (big) {
        memset(big, 0xab, 1 << 20);
        int ok = big[0] == (char)0xab && big[(1 << 20) - 1] == (char)0xab;
        line("malloc(1MiB)", "ok content=%d", ok);
        free(big);
    } else {
        line("malloc(1MiB)", "%s", errname(errno));
    }
    /* Grow the break directly too. */
    void *b1 = sbrk(0);
    if (sbrk(1 << 20) != (void *)-1) {
        memset(b1, 0x5a, 1 << 20);
        line("brk", "grew=%d", (char *)sbrk(0) - (char *)b1 >= (1 << 20));
        sbrk(-(1 << 20));
    } else {
        line("brk", "%s", errname(errno));
    }
    (void)brk0;

    size_t pg = 4096;
    char *m = mmap(0, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        line("mmap", "%s", errname(errno));
    } else {
        int zero = 1;
        for (size_t i = 0; i < 4 * pg; i++)
            zero &= m[i] == 0;
        for (size_t i = 0; i < 4 * pg; i++)
            m[i] = (char)(i * 7);
        line("mmap", "ok zeroed=%d", zero);
        char *r = mremap(m, 4 * pg, 64 * pg, MREMAP_MAYMOVE);
        if (r == MAP_FAILED) {
            line("mremap", "%s", errname(errno));
            munmap(m, 4 * pg);
        } else {
            int ok = 1;
            for (size_t i = 0; i < 4 * pg; i++)
                ok &= r[i] == (char)(i * 7);
            int tail0 = 1;
            for (size_t i = 4 * pg; i < 64 * pg; i++)
                tail0 &= r[i] == 0;
            r[64 * pg - 1] = 1;
            line("mremap", "ok content=%d tailzero=%d", ok, tail0);
            line("munmap", "%d", munmap(r, 64 * pg));
        }
    }

    errno = 0;
    fd = open("/data/x", O_WRONLY | O_CREAT, 0644);
    line("open(/data/x, O_WRONLY|O_CREAT)", "%s", fd < 0 ? errname(errno) : "ok");
    if (fd >= 0) {
        /* In the VM's own writable layer: it reads back, the rootfs stays as it was. */
        ssize_t w = write(fd, "xyz", 3);
        close(fd);
        struct stat xs;
        line("write then stat(/data/x)", "%zd st_size=%lld", w, stat("/data/x", &xs) == 0 ? (long long)xs.st_size : -1LL);
    }

    errno = 0;
    n = write(77, "x", 1);
    line("write(77)", "%s", n < 0 ? errname(errno) : "succeeded?!");

    errno = 0;
    long lrc = syscall(999);
    line("syscall(999)", "%s", lrc < 0 ? errname(errno) : "succeeded?!");

    struct timespec req = {0, 1000000};
    rc = nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &m2);
    long long ns = (long long)(m2.tv_sec - m1.tv_sec) * 1000000000LL + (m2.tv_nsec - m1.tv_nsec);
    line("nanosleep(1ms)", "%d monotonic_advanced=%d", rc, ns >= 1000000);

    struct sysinfo si;
    if (sysinfo(&si) == 0)
        line("sysinfo", "ok totalram>0=%d", si.totalram > 0);
    else
        line("sysinfo", "%s", errname(errno));

    cpu_set_t cs;
    CPU_ZERO(&cs);
    if (sched_getaffinity(0, sizeof cs, &cs) == 0)
        line("sched_getaffinity", "cpus>=1=%d", CPU_COUNT(&cs) >= 1);
    else
        line("sched_getaffinity", "%s", errname(errno));

    struct rlimit rl;
    if (prlimit(0, RLIMIT_STACK, NULL, &rl) == 0)
        line("prlimit64(RLIMIT_STACK)", "cur>0=%d", rl.rlim_cur > 0);
    else
        line("prlimit64(RLIMIT_STACK)", "%s", errname(errno));

    line("done", "ok");
    return 0;
}
