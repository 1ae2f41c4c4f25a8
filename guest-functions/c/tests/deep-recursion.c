/* deep-recursion: recurses without end after its request arrives, with a frame big enough
 * to cross pages quickly. The monitor must report a stack overflow (the guard page below the
 * 8 MiB stack), not a fault somewhere in whatever lies below the stack. */
#include <string.h>
#pragma GCC diagnostic ignored "-Winfinite-recursion"
#include <unistd.h>

static int depth(int n)
{
    volatile char frame[1024];
    memset((char *)frame, n, sizeof frame);
    return depth(n + 1) + frame[n % sizeof frame];
}

int main(void)
{
    char buf[16];
    (void)read(0, buf, sizeof buf);
    return depth(0);
}
