/* request-echo: answers with its request head, as the monitor hands it over in
 * /run/snapcall/request (docs/functions.md), then its body. Before its first stdin read (the
 * snapshot point) there is no request yet: it records what opening the file gave then, so a
 * test sees that the head of one call never leaks into the snapshot. Logs the body's size to
 * stderr (the function log). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char body[1 << 16], head[1 << 16];

int main(void)
{
    int early = open("/run/snapcall/request", O_RDONLY);
    int early_errno = early < 0 ? errno : 0;
    size_t n = 0;
    ssize_t r;
    while ((r = read(0, body + n, sizeof body - n)) > 0)
        n += (size_t)r;
    int fd = open("/run/snapcall/request", O_RDONLY);
    if (fd < 0) {
        printf("open: %s\n", strerror(errno));
        return 1;
    }
    size_t h = 0;
    while ((r = read(fd, head + h, sizeof head - h)) > 0)
        h += (size_t)r;
    close(fd);
    fprintf(stderr, "request-echo: %zu bytes\n", n);
    printf("before-snapshot: %s\n", early_errno == ENOENT ? "ENOENT" : "opened");
    fwrite(head, 1, h, stdout);
    printf("body %zu: ", n);
    fwrite(body, 1, n, stdout);
    return 0;
}
