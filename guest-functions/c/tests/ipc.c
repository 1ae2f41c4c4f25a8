/* ipc: pipes, socketpairs, eventfds and readiness inside the VM (vmm/tests/ipc.rs). The
 * request names the scenario:
 *
 *   basics        a pipe, an eventfd, a socketpair, poll, select and epoll; one line each
 *   read-forever  a blocking read of an empty pipe whose writer is open: nothing can ever
 *                 write, so the monitor ends the call
 *   fill-sockets  socketpairs until EMFILE, each filled until EAGAIN: the bytes queued stay
 *                 within the monitor's budget (the program's memory size)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

/* report() of an expression, with the errno it left (not one read before it ran). */
#define R(name, expr)                                                                              \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long rc_ = (expr);                                                                         \
        report(name, rc_, errno);                                                                  \
    } while (0)

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void basics(void)
{
    int p[2];
    char buf[64];
    R("pipe", pipe(p));
    R("write 5", write(p[1], "hello", 5));
    R("read", read(p[0], buf, sizeof buf));
    struct pollfd pf = {p[0], POLLIN, 0};
    double t0 = now_ms();
    int n = poll(&pf, 1, 100);
    printf("poll empty 100ms: %d, waited >= 100ms: %d\n", n, now_ms() - t0 >= 99);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    R("read non-blocking", read(p[0], buf, sizeof buf));
    close(p[1]);
    n = poll(&pf, 1, -1);
    printf("poll after close: %d revents %#x\n", n, pf.revents);
    R("read at eof", read(p[0], buf, sizeof buf));

    int e = eventfd(0, EFD_NONBLOCK);
    uint64_t v = 3;
    write(e, &v, 8);
    write(e, &v, 8);
    v = 0;
    R("eventfd read", read(e, &v, 8));
    printf("eventfd value: %llu\n", (unsigned long long)v);
    R("eventfd read again", read(e, &v, 8));

    int sv[2];
    R("socketpair", socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    R("epoll_ctl add", epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev));
    struct epoll_event out[4];
    t0 = now_ms();
    n = epoll_wait(ep, out, 4, 50);
    printf("epoll_wait empty 50ms: %d, waited >= 50ms: %d\n", n, now_ms() - t0 >= 49);
    send(sv[0], "ping", 4, 0);
    n = epoll_wait(ep, out, 4, -1);
    printf("epoll_wait: %d data %llu events %#x\n", n, (unsigned long long)out[0].data.u64, out[0].events);
    n = recv(sv[1], buf, sizeof buf, 0);
    printf("recv: %d %.*s\n", n, n, buf);
    fd_set w;
    FD_ZERO(&w);
    FD_SET(sv[1], &w);
    struct timeval tv = {1, 0};
    printf("select writable: %d %d\n", select(sv[1] + 1, NULL, &w, NULL, &tv), FD_ISSET(sv[1], &w));
    shutdown(sv[0], SHUT_WR);
    R("recv after shutdown", recv(sv[1], buf, sizeof buf, 0));
    R("epoll_ctl itself", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    R("socket(AF_INET)", socket(AF_INET, SOCK_STREAM, 0));
}

static void read_forever(void)
{
    int p[2];
    char c;
    pipe(p);
    printf("reading\n");
    fflush(stdout);
    read(p[0], &c, 1);
    printf("read returned?!\n");
}

static void fill_sockets(void)
{
    static char chunk[65536];
    long long queued = 0;
    int pairs = 0;
    for (;;) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
            printf("socketpairs: %d, then %s\n", pairs, errname(errno));
            break;
        }
        pairs++;
        for (int side = 0; side < 2; side++) {
            for (;;) {
                ssize_t n = write(sv[side], chunk, sizeof chunk);
                if (n <= 0)
                    break;
                queued += n;
            }
        }
    }
    struct sysinfo si;
    sysinfo(&si);
    long long memory = (long long)si.totalram * si.mem_unit;
    printf("queued within the memory size: %d, queued > half of it: %d\n", queued <= memory, queued > memory / 2);
}

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1);
    if (n < 0)
        return 1;
    if (!strcmp(req, "basics"))
        basics();
    else if (!strcmp(req, "read-forever"))
        read_forever();
    else if (!strcmp(req, "fill-sockets"))
        fill_sockets();
    else
        printf("unknown scenario %s\n", req);
    printf("done\n");
    return 0;
}
