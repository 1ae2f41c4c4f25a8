/* entropy: opens and maps snapcall's entropy device before its first stdin read. After the
 * request it prints the first 16 bytes of the mapping and 16 bytes read() from the device, in
 * hex, then how misuse of the device fails. Every restore must refill the mapping, so no two
 * calls from one snapshot may print the same bytes. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

static void hex(const unsigned char *b, int n)
{
    for (int i = 0; i < n; i++)
        printf("%02x", b[i]);
}

int main(void)
{
    int fd = open("/dev/snapcall-entropy", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 2;
    const unsigned char *page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED)
        return 3;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode))
        return 4;
    char buf[4096];
    while (read(0, buf, sizeof buf) > 0)
        ;
    unsigned char r[16];
    if (read(fd, r, sizeof r) != sizeof r)
        return 5;
    printf("mapped=");
    hex(page, 16);
    printf(" read=");
    hex(r, 16);
    errno = 0;
    ssize_t w = write(fd, "x", 1);
    printf(" write=%zd %s", w, errname(errno));
    errno = 0;
    void *off = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096);
    printf(" mmap(offset)=%s", off == MAP_FAILED ? errname(errno) : "mapped?!");
    errno = 0;
    int wr = open("/dev/snapcall-entropy", O_WRONLY);
    printf(" open(O_WRONLY)=%d %s", wr, errname(errno));
    /* At most 16 pages of the device, all mappings together (the page above is one). */
    errno = 0;
    void *more = mmap(NULL, 15 * 4096, PROT_READ, MAP_SHARED, fd, 0);
    printf(" mmap(15 more)=%s", more == MAP_FAILED ? errname(errno) : "OK");
    errno = 0;
    void *over = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    printf(" mmap(1 more)=%s\n", over == MAP_FAILED ? errname(errno) : "mapped?!");
    return 0;
}
