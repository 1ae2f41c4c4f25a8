/* big-output: 20 MiB of 'x' to stdout, beyond the 16 MiB output cap. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

static char buf[1 << 20];

int main(void)
{
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 20; i++) {
        size_t off = 0;
        while (off < sizeof buf) {
            ssize_t w = write(1, buf + off, sizeof buf - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return 1;
            }
            off += (size_t)w;
        }
    }
    return 0;
}
