/* stderr-then-fail: writes a line to stdout, 400 numbered lines (6400 bytes) to stderr,
 * then a last line naming the request, then fails as the request asks: "fault" dereferences
 * NULL (#PF), "spin" loops until the deadline. The monitor must keep the tail of stderr
 * with the error, and `snapcall run` prints what reached stdout. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1);
    if (n < 0)
        n = 0;
    req[n] = 0;
    printf("stdout before %s\n", req);
    fflush(stdout);
    for (int i = 0; i < 400; i++)
        fprintf(stderr, "stderr line %03d\n", i);
    fprintf(stderr, "last words before %s\n", req);
    fflush(stderr);
    if (strncmp(req, "spin", 4) == 0) {
        volatile unsigned long x = 0;
        for (;;)
            x++;
    }
    volatile int *p = (volatile int *)0;
    return *p;
}
