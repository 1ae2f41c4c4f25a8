/* hello-c: read the whole request, answer with a greeting that includes its length. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char buf[65536];

int main(void)
{
    unsigned long long total = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        total += (unsigned long long)n;
    }
    char out[128];
    int len = snprintf(out, sizeof out, "Hello from C! You sent %llu bytes.\n", total);
    for (int off = 0; off < len;) {
        ssize_t w = write(1, out + off, (size_t)(len - off));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        off += (int)w;
    }
    return 0;
}
