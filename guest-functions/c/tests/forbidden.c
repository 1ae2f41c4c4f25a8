/* forbidden: process creation and networking must be refused by the monitor. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

int main(void)
{
    errno = 0;
    long rc = syscall(SYS_fork);
    if (rc == 0)
        _exit(42); /* child, should never happen */
    report("fork", rc, errno);

    char *argv[] = {"/bin/sh", "-c", "echo escaped", NULL};
    char *envp[] = {NULL};
    errno = 0;
    rc = syscall(SYS_execve, "/bin/sh", argv, envp);
    report("execve(/bin/sh)", rc, errno);

    errno = 0;
    rc = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    report("socket(AF_INET)", rc, errno);

    errno = 0;
    rc = syscall(SYS_clone, (unsigned long)SIGCHLD, 0UL, 0UL, 0UL, 0UL);
    if (rc == 0)
        _exit(42);
    report("clone(SIGCHLD)", rc, errno);

    errno = 0;
    rc = syscall(SYS_vfork);
    if (rc == 0)
        _exit(42);
    report("vfork", rc, errno);
    return 0;
}
