/* path-escape: every attempt to read a host file must fail (or read only rootfs content). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include "common.h"

static void show(const char *label, int fd, int err)
{
    if (fd < 0) {
        printf("%s: %s\n", label, errname(err));
        fflush(stdout);
        return;
    }
    unsigned char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
        printf("%s: read %s\n", label, errname(errno));
    } else {
        printf("%s: read %zd bytes ", label, n);
        for (ssize_t i = 0; i < n; i++)
            printf("%02x", buf[i]);
        printf("\n");
    }
    close(fd);
    fflush(stdout);
}

static void try_open(const char *path)
{
    errno = 0;
    int fd = open(path, O_RDONLY);
    show(path, fd, errno);
}

static void try_openat(const char *path)
{
    char label[512];
    snprintf(label, sizeof label, "openat(AT_FDCWD, %s)", path);
    errno = 0;
    int fd = openat(AT_FDCWD, path, O_RDONLY);
    show(label, fd, errno);
}

int main(void)
{
    try_open("../../etc/passwd");
    try_open("/../../../etc/passwd");
    try_open("/escape");
    try_open("/escape-rel");
    try_open("/proc/self/root/etc/passwd");
    try_openat("../../etc/passwd");
    try_openat("/../../../etc/passwd");
    try_openat("/escape");
    try_openat("/escape-rel");
    try_open("/etc/passwd");
    try_open("/etc/hostname");
    try_open("/etc/hosts");
    try_open("/etc/shadow");
    try_open("/proc/self/environ");
    try_open("/proc/self/maps");
    try_open("/proc/1/cmdline");
    try_open("/dev/mem");
    return 0;
}
