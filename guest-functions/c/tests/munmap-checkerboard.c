/* munmap-checkerboard: after its snapshot point, unmaps every other page of a region it
 * mapped and filled before it. A monitor that paid one host mapping per discarded guest page
 * would split its own address space until the host hit vm.max_map_count and aborted.
 * Prints how many unmaps failed and a checksum of the pages it kept. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define REGION (32UL << 20)
#define PAGE 4096UL

int main(void)
{
    unsigned char *p = mmap(0, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    for (unsigned long off = PAGE; off < REGION; off += 2 * PAGE)
        p[off] = (unsigned char)(off / PAGE);
    char buf[64];
    if (read(0, buf, sizeof buf) < 0) /* the snapshot point */
        return 2;
    unsigned long failures = 0, kept = 0;
    for (unsigned long off = 0; off < REGION; off += 2 * PAGE)
        failures += munmap(p + off, PAGE) != 0;
    for (unsigned long off = PAGE; off < REGION; off += 2 * PAGE)
        kept += p[off];
    printf("unmapped %lu pages, %lu failed, checksum %lu\n", REGION / PAGE / 2, failures, kept);
    return 0;
}
