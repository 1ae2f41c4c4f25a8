/* open-file: holds a rootfs file open, half read, across its first stdin read, so a snapshot
 * must reopen it at the same fd and offset. Prints the fd and the rest of the file. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    int fd = open("/data/alphabet.txt", O_RDONLY);
    char head[10], rest[64], buf[4096];
    if (fd < 0 || read(fd, head, sizeof head) != sizeof head)
        return 2;
    while (read(0, buf, sizeof buf) > 0)
        ;
    ssize_t n = read(fd, rest, sizeof rest);
    if (n < 0)
        return 3;
    printf("fd=%d rest=%.*s\n", fd, (int)n, rest);
    return 0;
}
