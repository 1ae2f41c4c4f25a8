/* open-file: holds a rootfs file open, half read, and changes into /data, both before its
 * first stdin read, so a snapshot must reopen the file at the same fd and offset and restore
 * the working directory. Prints the fd, the rest of the file, the cwd, and the start of the
 * file opened by a relative path after the request. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    int fd = open("/data/alphabet.txt", O_RDONLY);
    char head[10], rest[64], buf[4096], cwd[256], first[3];
    if (fd < 0 || read(fd, head, sizeof head) != sizeof head)
        return 2;
    if (chdir("/data") != 0)
        return 4;
    while (read(0, buf, sizeof buf) > 0)
        ;
    ssize_t n = read(fd, rest, sizeof rest);
    if (n < 0)
        return 3;
    int rel = open("alphabet.txt", O_RDONLY);
    if (rel < 0 || read(rel, first, sizeof first) != sizeof first || !getcwd(cwd, sizeof cwd))
        return 5;
    printf("fd=%d rest=%.*s cwd=%s relative=%.3s\n", fd, (int)n, rest, cwd, first);
    return 0;
}
