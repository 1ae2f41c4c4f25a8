/* hostile: one hostile scenario per call, named by the request (vmm/tests/hostile.rs).
 *
 *   pointers           every pointer-taking syscall the monitor implements, with each bad
 *                      pointer; one "call(pointer): result" line each
 *   fd-bomb            open until EMFILE, then close one and reopen, close all and reopen
 *   flood-ring         small writes to stdout (buffered in the output ring) past the cap
 *   flood-stderr       the same on stderr
 *   flood-writev       writev of 64 KiB vectors past the cap
 *   futex-timeout      FUTEX_WAIT with a 300 ms relative timeout, then WAIT_BITSET with an
 *                      absolute one on each clock; prints the results and slept times
 *   futex-forever      FUTEX_WAIT with no timeout: nothing can ever wake it
 *   futex-past-deadline  FUTEX_WAIT with a one-hour timeout (the call's deadline comes first)
 *   unknown-syscalls   tens of thousands of distinct syscall numbers the monitor lacks
 *   hlt cli sti wrmsr rdmsr in out mov-cr3 lgdt   one privileged instruction at CPL3
 *   exec-doorbell      jump to the doorbell page (0xD000)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

#define SELF "/bin/hostile"
#define DOORBELL_ADDR 0xD000UL

static uintptr_t memory_end;

/* The result column: "ok" for success (the only successes are NULLs a syscall accepts as
 * "none"), else the errno's name. */
static void row(const char *call, const char *ptr, long rc)
{
    printf("%s(%s): %s\n", call, ptr, rc < 0 ? errname(errno) : "ok");
}

typedef long (*pointer_call)(uintptr_t p);

static int file_fd, dir_fd;
static uint32_t futex_word = 7;
static char buf[4096];

static long c_read(uintptr_t p) { return syscall(SYS_read, file_fd, p, 8); }
static long c_pread_stdin(uintptr_t p) { return syscall(SYS_pread64, 0, p, 8, 0); }
static long c_write(uintptr_t p) { return syscall(SYS_write, 1, p, 8); }
static long c_readv_iov(uintptr_t p) { return syscall(SYS_readv, file_fd, p, 1); }
static long c_writev_iov(uintptr_t p) { return syscall(SYS_writev, 1, p, 1); }
static long c_readv_base(uintptr_t p)
{
    struct iovec v = {(void *)p, 8};
    return syscall(SYS_readv, file_fd, &v, 1);
}
static long c_writev_base(uintptr_t p)
{
    struct iovec v = {(void *)p, 8};
    return syscall(SYS_writev, 1, &v, 1);
}
static long c_open(uintptr_t p) { return syscall(SYS_open, p, O_RDONLY); }
static long c_openat(uintptr_t p) { return syscall(SYS_openat, AT_FDCWD, p, O_RDONLY); }
static long c_stat_path(uintptr_t p) { return syscall(SYS_stat, p, buf); }
static long c_stat_buf(uintptr_t p) { return syscall(SYS_stat, SELF, p); }
static long c_lstat_buf(uintptr_t p) { return syscall(SYS_lstat, SELF, p); }
static long c_fstat(uintptr_t p) { return syscall(SYS_fstat, 1, p); }
static long c_newfstatat_path(uintptr_t p) { return syscall(SYS_newfstatat, AT_FDCWD, p, buf, 0); }
static long c_newfstatat_buf(uintptr_t p) { return syscall(SYS_newfstatat, AT_FDCWD, SELF, p, 0); }
static long c_access(uintptr_t p) { return syscall(SYS_access, p, R_OK); }
static long c_faccessat2(uintptr_t p) { return syscall(439, AT_FDCWD, p, R_OK, 0); }
static long c_readlink_path(uintptr_t p) { return syscall(SYS_readlink, p, buf, 64); }
static long c_readlink_buf(uintptr_t p) { return syscall(SYS_readlink, "/proc/self/exe", p, 64); }
static long c_getcwd(uintptr_t p) { return syscall(SYS_getcwd, p, 64); }
static long c_chdir(uintptr_t p) { return syscall(SYS_chdir, p); }
static long c_uname(uintptr_t p) { return syscall(SYS_uname, p); }
static long c_gettimeofday(uintptr_t p) { return syscall(SYS_gettimeofday, p, 0); }
static long c_time(uintptr_t p) { return syscall(SYS_time, p); }
static long c_sysinfo(uintptr_t p) { return syscall(SYS_sysinfo, p); }
static long c_clock_gettime(uintptr_t p) { return syscall(SYS_clock_gettime, CLOCK_REALTIME, p); }
static long c_clock_getres(uintptr_t p) { return syscall(SYS_clock_getres, CLOCK_REALTIME, p); }
static long c_nanosleep(uintptr_t p) { return syscall(SYS_nanosleep, p, 0); }
static long c_clock_nanosleep(uintptr_t p)
{
    /* The raw syscall returns minus the errno too. */
    return syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, p, 0);
}
static long c_rt_sigaction_act(uintptr_t p) { return syscall(SYS_rt_sigaction, SIGUSR1, p, 0, 8); }
static long c_rt_sigaction_old(uintptr_t p) { return syscall(SYS_rt_sigaction, SIGUSR1, 0, p, 8); }
static long c_rt_sigprocmask_set(uintptr_t p) { return syscall(SYS_rt_sigprocmask, SIG_BLOCK, p, 0, 8); }
static long c_rt_sigprocmask_old(uintptr_t p) { return syscall(SYS_rt_sigprocmask, SIG_BLOCK, 0, p, 8); }
static long c_sigaltstack_old(uintptr_t p) { return syscall(SYS_sigaltstack, 0, p); }
static long c_arch_prctl(uintptr_t p) { return syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, p); }
static long c_futex_word(uintptr_t p) { return syscall(SYS_futex, p, FUTEX_WAIT_PRIVATE, 7, 0, 0, 0); }
static long c_futex_timeout(uintptr_t p) { return syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 8, p, 0, 0); }
static long c_sched_getaffinity(uintptr_t p) { return syscall(SYS_sched_getaffinity, 0, 128, p); }
static long c_getdents64(uintptr_t p) { return syscall(SYS_getdents64, dir_fd, p, 4096); }
static long c_getrlimit(uintptr_t p) { return syscall(SYS_getrlimit, RLIMIT_NOFILE, p); }
static long c_prlimit64_old(uintptr_t p) { return syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, p); }
static long c_getrandom(uintptr_t p) { return syscall(SYS_getrandom, p, 8, 0); }
static int pipe_fds[2], epoll_fd, sock_fds[2];
static long c_pipe2(uintptr_t p) { return syscall(SYS_pipe2, p, 0); }
static long c_poll(uintptr_t p) { return syscall(SYS_poll, p, 1, 0); }
static long c_select(uintptr_t p)
{
    struct timeval zero = {0, 0};
    return syscall(SYS_select, 1, p, 0, 0, &zero);
}
static long c_epoll_ctl(uintptr_t p) { return syscall(SYS_epoll_ctl, epoll_fd, EPOLL_CTL_ADD, pipe_fds[0], p); }
static long c_epoll_wait(uintptr_t p) { return syscall(SYS_epoll_wait, epoll_fd, p, 1, 0); }
static long c_socketpair(uintptr_t p) { return syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, p); }
static long c_sendmsg(uintptr_t p) { return syscall(SYS_sendmsg, sock_fds[0], p, 0); }
static long c_recvmsg(uintptr_t p) { return syscall(SYS_recvmsg, sock_fds[0], p, MSG_DONTWAIT); }

static void pointers(void)
{
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return;
    memory_end = (uintptr_t)si.totalram * si.mem_unit;
    printf("memory end: %#lx\n", (unsigned long)memory_end);
    file_fd = open(SELF, O_RDONLY);
    dir_fd = open("/bin", O_RDONLY | O_DIRECTORY);
    if (pipe(pipe_fds) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sock_fds) != 0 || (epoll_fd = epoll_create1(0)) < 0)
        return;
    const struct {
        const char *label;
        uintptr_t p;
    } ptrs[] = {
        {"NULL", 0},
        {"0x1000", 0x1000},
        {"end", memory_end},
        {"end-1", memory_end - 1},
        {"u64::MAX", UINTPTR_MAX},
    };
    const struct {
        const char *name;
        pointer_call f;
    } calls[] = {
        {"read(file, p, 8)", c_read},
        {"pread64(0, p, 8, 0)", c_pread_stdin},
        {"write(1, p, 8)", c_write},
        {"readv(file, p, 1)", c_readv_iov},
        {"writev(1, p, 1)", c_writev_iov},
        {"readv(file, {p, 8}, 1)", c_readv_base},
        {"writev(1, {p, 8}, 1)", c_writev_base},
        {"open(p)", c_open},
        {"openat(AT_FDCWD, p)", c_openat},
        {"stat(p, buf)", c_stat_path},
        {"stat(self, p)", c_stat_buf},
        {"lstat(self, p)", c_lstat_buf},
        {"fstat(1, p)", c_fstat},
        {"newfstatat(AT_FDCWD, p, buf, 0)", c_newfstatat_path},
        {"newfstatat(AT_FDCWD, self, p, 0)", c_newfstatat_buf},
        {"access(p)", c_access},
        {"faccessat2(AT_FDCWD, p)", c_faccessat2},
        {"readlink(p, buf, 64)", c_readlink_path},
        {"readlink(/proc/self/exe, p, 64)", c_readlink_buf},
        {"getcwd(p, 64)", c_getcwd},
        {"chdir(p)", c_chdir},
        {"uname(p)", c_uname},
        {"gettimeofday(p, NULL)", c_gettimeofday},
        {"time(p)", c_time},
        {"sysinfo(p)", c_sysinfo},
        {"clock_gettime(REALTIME, p)", c_clock_gettime},
        {"clock_getres(REALTIME, p)", c_clock_getres},
        {"nanosleep(p, NULL)", c_nanosleep},
        {"clock_nanosleep(MONOTONIC, 0, p, NULL)", c_clock_nanosleep},
        {"rt_sigaction(SIGUSR1, p, NULL)", c_rt_sigaction_act},
        {"rt_sigaction(SIGUSR1, NULL, p)", c_rt_sigaction_old},
        {"rt_sigprocmask(SIG_BLOCK, p, NULL)", c_rt_sigprocmask_set},
        {"rt_sigprocmask(SIG_BLOCK, NULL, p)", c_rt_sigprocmask_old},
        {"sigaltstack(NULL, p)", c_sigaltstack_old},
        {"arch_prctl(ARCH_GET_FS, p)", c_arch_prctl},
        {"futex(p, FUTEX_WAIT, 7, NULL)", c_futex_word},
        {"futex(&word, FUTEX_WAIT, 8, p)", c_futex_timeout},
        {"sched_getaffinity(0, 128, p)", c_sched_getaffinity},
        {"getdents64(dir, p, 4096)", c_getdents64},
        {"getrlimit(RLIMIT_NOFILE, p)", c_getrlimit},
        {"prlimit64(0, RLIMIT_NOFILE, NULL, p)", c_prlimit64_old},
        {"getrandom(p, 8, 0)", c_getrandom},
        {"pipe2(p, 0)", c_pipe2},
        {"poll(p, 1, 0)", c_poll},
        {"select(1, p, NULL, NULL, &zero)", c_select},
        {"epoll_ctl(ep, ADD, pipe, p)", c_epoll_ctl},
        {"epoll_wait(ep, p, 1, 0)", c_epoll_wait},
        {"socketpair(AF_UNIX, STREAM, 0, p)", c_socketpair},
        {"sendmsg(sock, p, 0)", c_sendmsg},
        {"recvmsg(sock, p, MSG_DONTWAIT)", c_recvmsg},
    };
    for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++)
        for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
            /* At end-1, a path with no NUL before the end of memory (the top of the stack
             * holds only start-up strings nobody reads any more); a call that wrote there
             * before must not change what the next one reads. */
            *(volatile char *)(memory_end - 1) = 'a';
            errno = 0;
            long rc = calls[c].f(ptrs[i].p);
            row(calls[c].name, ptrs[i].label, rc);
        }
    printf("cwd still: %s\n", getcwd(buf, sizeof buf) ? buf : errname(errno));
}

static void fd_bomb(void)
{
    int first = -1, last = -1, n = 0;
    for (;;) {
        int fd = open(SELF, O_RDONLY);
        if (fd < 0) {
            printf("opened %d (fds %d..%d), then %s\n", n, first, last, errname(errno));
            break;
        }
        if (first < 0)
            first = fd;
        last = fd;
        n++;
    }
    close(first + 100);
    printf("after closing %d: open gives %d\n", first + 100, open(SELF, O_RDONLY));
    printf("and then %s\n", open(SELF, O_RDONLY) < 0 ? errname(errno) : "a new fd?!");
    for (int fd = first; fd <= last; fd++)
        close(fd);
    int fd = open(SELF, O_RDONLY);
    char magic[4] = {0};
    printf("after closing all: open gives %d, reads %zd \"%.3s\"\n", fd, read(fd, magic, 4), magic + 1);
}

static void flood(int fd, size_t chunk, int use_writev)
{
    static char data[1 << 16];
    memset(data, 'x', sizeof data);
    for (;;) {
        long rc;
        if (use_writev) {
            struct iovec v[2] = {{data, chunk / 2}, {data, chunk - chunk / 2}};
            rc = writev(fd, v, 2);
        } else {
            rc = write(fd, data, chunk);
        }
        if (rc < 0) {
            printf("write failed: %s\n", errname(errno));
            return;
        }
    }
}

static long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void futex_timeouts(void)
{
    uint32_t word = 5;
    struct timespec rel = {0, 300 * 1000000L};
    long long t0 = now_ns(CLOCK_MONOTONIC);
    long rc = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 5, &rel, 0, 0);
    long long slept = now_ns(CLOCK_MONOTONIC) - t0;
    printf("FUTEX_WAIT 300ms: %s, slept >= 300ms: %d\n", rc < 0 ? errname(errno) : "0?!", slept >= 300000000LL);
    const struct {
        const char *name;
        clockid_t clock;
        int flag;
    } clocks[] = {{"MONOTONIC", CLOCK_MONOTONIC, 0}, {"REALTIME", CLOCK_REALTIME, FUTEX_CLOCK_REALTIME}};
    for (int i = 0; i < 2; i++) {
        long long start = now_ns(clocks[i].clock);
        long long at = start + 200 * 1000000LL;
        struct timespec abs = {at / 1000000000LL, at % 1000000000LL};
        rc = syscall(SYS_futex, &word, FUTEX_WAIT_BITSET_PRIVATE | clocks[i].flag, 5, &abs, 0, FUTEX_BITSET_MATCH_ANY);
        int late_enough = now_ns(clocks[i].clock) >= at;
        printf("FUTEX_WAIT_BITSET %s +200ms: %s, woke after the time: %d\n", clocks[i].name,
               rc < 0 ? errname(errno) : "0?!", late_enough);
    }
    rc = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 6, &rel, 0, 0);
    printf("FUTEX_WAIT on a changed word: %s\n", rc < 0 ? errname(errno) : "0?!");
}

static void futex_wait(long seconds)
{
    uint32_t word = 0;
    struct timespec t = {seconds, 0};
    long rc = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, seconds ? &t : NULL, 0, 0);
    printf("futex returned %ld %s\n", rc, errname(errno));
}

static void unknown_syscalls(void)
{
    long n = 0, enosys = 0;
    for (unsigned long nr = 1000; nr < 30000; nr++, n++)
        enosys += syscall(nr) == -1 && errno == ENOSYS;
    for (unsigned long i = 0; i < 2000; i++, n++)
        enosys += syscall(~0UL - i * 0x100000001UL) == -1 && errno == ENOSYS;
    printf("%ld unknown syscalls, %ld ENOSYS\n", n, enosys);
}

/* Privileged instructions: each faults at CPL3 (#GP), which ends the call. */
static void privileged(const char *what)
{
    if (!strcmp(what, "hlt"))
        __asm__ volatile("hlt");
    else if (!strcmp(what, "cli"))
        __asm__ volatile("cli");
    else if (!strcmp(what, "sti"))
        __asm__ volatile("sti");
    else if (!strcmp(what, "wrmsr"))
        __asm__ volatile("wrmsr" ::"c"(0xC0000100u /* FS_BASE */), "a"(0), "d"(0));
    else if (!strcmp(what, "rdmsr")) {
        unsigned lo, hi;
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xC0000082u /* LSTAR */));
    } else if (!strcmp(what, "in")) {
        unsigned char v;
        __asm__ volatile("inb $0x60, %0" : "=a"(v));
    } else if (!strcmp(what, "out"))
        __asm__ volatile("outb %0, $0xC0" ::"a"((unsigned char)0)); /* the exception port base */
    else if (!strcmp(what, "mov-cr3"))
        __asm__ volatile("mov %0, %%cr3" ::"r"(0x1000UL));
    else if (!strcmp(what, "lgdt")) {
        struct __attribute__((packed)) {
            unsigned short limit;
            unsigned long base;
        } gdtr = {0, 0};
        __asm__ volatile("lgdt %0" ::"m"(gdtr));
    } else if (!strcmp(what, "exec-doorbell"))
        ((void (*)(void))DOORBELL_ADDR)();
    else
        return;
    printf("%s did not fault\n", what);
}

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1);
    if (n <= 0)
        return 2;
    req[strcspn(req, "\n")] = 0;
    if (!strcmp(req, "pointers"))
        pointers();
    else if (!strcmp(req, "fd-bomb"))
        fd_bomb();
    else if (!strcmp(req, "flood-ring"))
        flood(1, 100, 0);
    else if (!strcmp(req, "flood-stderr"))
        flood(2, 100, 0);
    else if (!strcmp(req, "flood-writev"))
        flood(1, 1 << 16, 1);
    else if (!strcmp(req, "futex-timeout"))
        futex_timeouts();
    else if (!strcmp(req, "futex-forever"))
        futex_wait(0);
    else if (!strcmp(req, "futex-past-deadline"))
        futex_wait(3600);
    else if (!strcmp(req, "unknown-syscalls"))
        unknown_syscalls();
    else
        privileged(req);
    printf("done\n");
    return 0;
}
