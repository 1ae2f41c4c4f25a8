/* counter: global state must not leak between calls restored from one snapshot. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static long counter;

int main(void)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0 && errno != EINTR)
            return 1;
    }
    counter++;
    printf("counter=%ld\n", counter);
    return 0;
}
