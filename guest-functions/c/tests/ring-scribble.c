/* ring-scribble: writes garbage into the output ring and its header (monitor pages the
 * program can write, see vmm/src/output_ring.rs) between writes. The monitor must deliver
 * what was buffered before each scribble, drop what the scribbles destroyed, never read
 * past the ring, and keep the call going. Addresses as in vmm/src/layout.rs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

#define HDR ((volatile unsigned long *)0x20000)
#define RING ((volatile unsigned long *)0x21000)

int main(void)
{
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    write(1, "a", 1);          /* buffered */
    HDR[1] = ~0UL;             /* "used" absurd: the stub refuses, the drain clamps */
    write(1, "b", 1);          /* an exit: "a" then "b" */
    HDR[2] = 0;                /* memory end 0: the stub refuses */
    write(1, "c", 1);
    HDR[2] = ~0UL;
    write(1, "d", 1);          /* buffered... */
    for (int i = 0; i < 64; i++)
        RING[i] = 0x4141414141414141UL; /* ...and destroyed before the next exit */
    getppid();                 /* an exit: the drain stops at the garbage */
    HDR[0] = ~0UL;             /* "enable" every fd, then close fd 2 */
    close(2);
    write(2, "lost", 4);       /* buffered for a closed fd: dropped */
    write(1, "e\n", 2);
    errno = 0;
    long r = write(1, (const void *)0x1000, 8); /* the monitor's page tables: refused */
    char line[64];
    int n = snprintf(line, sizeof line, "write(0x1000): %ld %s\n", r, errname(errno));
    write(1, line, n);
    return 0;
}
