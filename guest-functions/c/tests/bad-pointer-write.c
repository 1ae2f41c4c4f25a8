/* bad-pointer-write: hand the monitor pointers it must refuse (low page, non-canonical / kernel). */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "common.h"

static void try(const char *label, const void *ptr)
{
    errno = 0;
    long rc = syscall(SYS_write, 1, ptr, 10);
    int e = errno;
    if (rc < 0)
        printf("write(%s): %ld %s\n", label, rc, errname(e));
    else
        printf("write(%s): %ld\n", label, rc);
    fflush(stdout);
}

int main(void)
{
    try("0x10", (const void *)0x10);
    try("0xffff800000000000", (const void *)0xffff800000000000UL);
    return 0;
}
