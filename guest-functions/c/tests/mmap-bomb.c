/* mmap-bomb: map and touch 1 MiB anonymous chunks until the monitor says no. */
#include <errno.h>
#include <sys/mman.h>
#include "common.h"

int main(void)
{
    unsigned long chunks = 0;
    int err = 0;
    for (;;) {
        char *p = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            err = errno;
            break;
        }
        p[0] = 1;
        chunks++;
        if (chunks > (1UL << 22)) /* 4 TiB: something is wrong, stop anyway */
            break;
    }
    printf("chunks=%lu errno=%s\n", chunks, errname(err));
    return 0;
}
