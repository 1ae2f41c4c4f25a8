/* forbidden: process creation, program replacement, networking, named AF_UNIX sockets and
 * tracing must be refused by the monitor (EPERM, docs/vmm.md; socket calls on a non-socket
 * fd are ENOTSOCK). One "call: result" line each. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

int main(void)
{
    static char *argv[] = {"/bin/sh", "-c", "echo escaped", NULL};
    static char *envp[] = {NULL};
    static unsigned long clone_args[11] = {0}; /* struct clone_args, all zero: a fork */
    int sv[2];
    /* An AF_UNIX socket is made, but it can get no name and reach none. */
    int us = socket(AF_UNIX, SOCK_DGRAM, 0);
    static struct sockaddr_un addr = {AF_UNIX, "/tmp/named.sock"};
    const struct {
        const char *name;
        long nr, a, b, c, d, e;
    } calls[] = {
        {"fork", SYS_fork, 0, 0, 0, 0, 0},
        {"vfork", SYS_vfork, 0, 0, 0, 0, 0},
        {"clone(SIGCHLD)", SYS_clone, SIGCHLD, 0, 0, 0, 0},
        {"clone(CLONE_VM|CLONE_THREAD)", SYS_clone, CLONE_VM | CLONE_THREAD | CLONE_SIGHAND, 0, 0, 0, 0}, /* EINVAL: a thread shares the fd table too */
        {"clone3", SYS_clone3, (long)clone_args, sizeof clone_args, 0, 0, 0},
        {"execve(/bin/sh)", SYS_execve, (long)"/bin/sh", (long)argv, (long)envp, 0, 0},
        {"execveat(/bin/sh)", SYS_execveat, AT_FDCWD, (long)"/bin/sh", (long)argv, (long)envp, 0},
        {"socket(AF_INET)", SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0},
        {"socket(AF_INET6)", SYS_socket, AF_INET6, SOCK_DGRAM, 0, 0, 0},
        {"bind(AF_UNIX socket)", SYS_bind, us, (long)&addr, sizeof addr, 0, 0},
        {"connect(AF_UNIX socket)", SYS_connect, us, (long)&addr, sizeof addr, 0, 0},
        {"socketpair(AF_INET)", SYS_socketpair, AF_INET, SOCK_STREAM, 0, (long)sv, 0},
        {"connect(0)", SYS_connect, 0, 0, 0, 0, 0},
        {"accept4(0)", SYS_accept4, 0, 0, 0, 0, 0},
        {"sendmmsg(0)", SYS_sendmmsg, 0, 0, 0, 0, 0},
        {"recvmmsg(0)", SYS_recvmmsg, 0, 0, 0, 0, 0},
        {"ptrace(PTRACE_TRACEME)", SYS_ptrace, PTRACE_TRACEME, 0, 0, 0, 0},
        {"ptrace(PTRACE_ATTACH, 1)", SYS_ptrace, PTRACE_ATTACH, 1, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        errno = 0;
        long rc = syscall(calls[i].nr, calls[i].a, calls[i].b, calls[i].c, calls[i].d, calls[i].e);
        if (rc == 0 && calls[i].nr != SYS_ptrace)
            _exit(42); /* a child, which must never exist */
        report(calls[i].name, rc, errno);
    }
    return 0;
}
