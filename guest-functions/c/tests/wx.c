/* wx: W^X, one scenario per call, named by the request (vmm/tests/wx.rs). Each scenario that
 * must fault prints "addr 0x..." (to stderr: a failed call keeps its tail) just before the
 * access, so the test can check the fault's address.
 *
 *   write-text        write into its own .text
 *   write-rodata      write into a string constant in .rodata
 *   write-data        write .data and .bss (must work)
 *   exec-stack        copy a `ret` onto the stack and call it
 *   exec-heap         the same in malloc'd (brk) memory
 *   exec-mmap         the same in an anonymous rw mapping
 *   mprotect-ro       map rw, write, mprotect read-only, read (works), write again
 *   mprotect-exec     write code into an rw page, mprotect it r-x and call it (works: prints
 *                     its result), mprotect it rw again and write (works), then call it
 *   prot-none         map rw, mprotect PROT_NONE, read
 *   mmap-none         mmap PROT_NONE, read
 *   page-checkerboard  mprotect every other page of 8 MiB read-only, check every page
 *   window-checkerboard  mprotect one page of every 2 MiB window of 960 MiB read-only until
 *                     the page-table pool is spent; then free a window and retry; then
 *                     munmap one page of every window of a read-only mapping (reports on
 *                     stderr, which a failed call keeps)
 *   threads           two threads, each rewriting, re-protecting and calling its own code
 *                     page 100 times, yielding to the other in between; prints what failed
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

#define PAGE 4096UL
#define WINDOW (2UL << 20)

static const char constant[] = "a string constant in .rodata";
static int initialised = 7;
static int zeroed;

typedef int (*fn)(void);

static void say_addr(const void *p)
{
    fprintf(stderr, "addr %p\n", p);
    fflush(stderr);
}

static void *rw_page(void)
{
    void *p = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        printf("mmap: %s\n", errname(errno));
        exit(3);
    }
    return p;
}

static void call_copy(unsigned char *where)
{
    static const unsigned char ret42[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3}; /* mov eax, 42; ret */
    memcpy(where, ret42, sizeof ret42);
    say_addr(where);
    printf("returned %d\n", ((fn)(uintptr_t)where)());
}

static void checked(const char *what, int rc)
{
    if (rc != 0) {
        printf("%s: %s\n", what, errname(errno));
        exit(4);
    }
}

static void window_checkerboard(void)
{
    const unsigned long size = 960UL << 20;
    unsigned char *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "mmap: %s\n", errname(errno));
        exit(3);
    }
    unsigned long ok = 0, enomem = 0, other = 0, first_refused = 0;
    for (unsigned long off = 0; off < size; off += WINDOW) {
        if (mprotect(p + off, PAGE, PROT_READ) == 0)
            ok++;
        else if (errno == ENOMEM) {
            if (!enomem)
                first_refused = off;
            enomem++;
        } else
            other++;
    }
    fprintf(stderr, "mprotect ok %lu enomem %lu other %lu\n", ok, enomem, other);
    /* A refused window kept its protection: still writable. */
    p[first_refused] = 1;
    /* The pages around every changed one still read (their first touch each costs a
     * fault, so not every page), and the writable neighbours still write. */
    unsigned long sum = 0;
    for (unsigned long off = 0; off < size; off += WINDOW) {
        sum += p[off] + p[off + PAGE];
        p[off + PAGE] = 2;
    }
    fprintf(stderr, "read all, sum %lu\n", sum);
    /* One window back to uniform frees its table for the refused one. */
    checked("mprotect back", mprotect(p, PAGE, PROT_READ | PROT_WRITE));
    checked("mprotect retry", mprotect(p + first_refused, PAGE, PROT_READ));
    fprintf(stderr, "retry ok\n");
    checked("munmap all", munmap(p, size));
    /* munmap checkerboard: an unmapped page in a read-only window makes it mixed too. */
    unsigned char *r = mmap(0, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        fprintf(stderr, "mmap r: %s\n", errname(errno));
        exit(3);
    }
    ok = enomem = other = 0;
    for (unsigned long off = 0; off < size; off += WINDOW) {
        if (munmap(r + off, PAGE) == 0)
            ok++;
        else if (errno == ENOMEM)
            enomem++;
        else
            other++;
    }
    fprintf(stderr, "munmap ok %lu enomem %lu other %lu\n", ok, enomem, other);
    say_addr(r + PAGE);
    r[PAGE] = 1; /* still read-only */
}

/* One thread of "threads": returns how many of its rounds went wrong. */
static void *code_rounds(void *arg)
{
    unsigned char *p = rw_page();
    (void)arg;
    unsigned long wrong = 0;
    for (int i = 0; i < 100; i++) {
        if (mprotect(p, PAGE, PROT_READ | PROT_WRITE) != 0)
            wrong++;
        unsigned char code[] = {0xB8, (unsigned char)i, 0x00, 0x00, 0x00, 0xC3}; /* mov eax, i; ret */
        memcpy(p, code, sizeof code);
        if (mprotect(p, PAGE, PROT_READ | PROT_EXEC) != 0)
            wrong++;
        sched_yield();
        if (((fn)(uintptr_t)p)() != i)
            wrong++;
    }
    return (void *)wrong;
}

static void threads(void)
{
    pthread_t other;
    if (pthread_create(&other, 0, code_rounds, 0) != 0) {
        printf("pthread_create failed\n");
        exit(6);
    }
    void *mine = code_rounds(0), *theirs = 0;
    pthread_join(other, &theirs);
    printf("threads wrong %lu %lu\n", (unsigned long)mine, (unsigned long)theirs);
}

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1); /* the snapshot point */
    if (n <= 0)
        return 2;
    req[strcspn(req, "\n")] = 0;
    if (!strcmp(req, "write-text")) {
        volatile unsigned char *text = (volatile unsigned char *)(uintptr_t)&main;
        say_addr((const void *)text);
        *text = 0xC3;
    } else if (!strcmp(req, "write-rodata")) {
        volatile char *c = (volatile char *)constant;
        say_addr(constant);
        c[0] = 'A';
    } else if (!strcmp(req, "write-data")) {
        initialised++;
        zeroed++;
        printf("data %d bss %d\n", initialised, zeroed);
    } else if (!strcmp(req, "exec-stack")) {
        unsigned char code[16];
        call_copy(code);
    } else if (!strcmp(req, "exec-heap")) {
        call_copy(malloc(64));
    } else if (!strcmp(req, "exec-mmap")) {
        call_copy(rw_page());
    } else if (!strcmp(req, "mprotect-ro")) {
        volatile unsigned char *p = rw_page();
        p[100] = 9;
        checked("mprotect", mprotect((void *)p, PAGE, PROT_READ));
        fprintf(stderr, "read %d\n", p[100]);
        say_addr((const void *)(p + 100));
        p[100] = 10;
    } else if (!strcmp(req, "mprotect-exec")) {
        unsigned char *p = rw_page();
        static const unsigned char ret42[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};
        memcpy(p, ret42, sizeof ret42);
        checked("mprotect rx", mprotect(p, PAGE, PROT_READ | PROT_EXEC));
        fprintf(stderr, "returned %d\n", ((fn)(uintptr_t)p)());
        checked("mprotect rw", mprotect(p, PAGE, PROT_READ | PROT_WRITE));
        p[1] = 0x2B;
        fprintf(stderr, "wrote\n");
        say_addr(p);
        ((fn)(uintptr_t)p)();
    } else if (!strcmp(req, "prot-none")) {
        volatile unsigned char *p = rw_page();
        checked("mprotect", mprotect((void *)p, PAGE, PROT_NONE));
        say_addr((const void *)p);
        printf("%d\n", p[0]);
    } else if (!strcmp(req, "mmap-none")) {
        volatile unsigned char *p = mmap(0, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        say_addr((const void *)p);
        printf("%d\n", p[0]);
    } else if (!strcmp(req, "page-checkerboard")) {
        const unsigned long size = 8UL << 20;
        unsigned char *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (unsigned long off = 0; off < size; off += PAGE)
            p[off] = (unsigned char)(off / PAGE);
        for (unsigned long off = 0; off < size; off += 2 * PAGE)
            checked("mprotect", mprotect(p + off, PAGE, PROT_READ));
        unsigned long sum = 0;
        for (unsigned long off = 0; off < size; off += PAGE)
            sum += p[off];
        for (unsigned long off = PAGE; off < size; off += 2 * PAGE)
            p[off] = 0; /* the writable half */
        printf("sum %lu\n", sum);
        fflush(stdout);
        say_addr(p + 2 * PAGE);
        p[2 * PAGE] = 0; /* a read-only one */
    } else if (!strcmp(req, "threads")) {
        threads();
    } else if (!strcmp(req, "window-checkerboard")) {
        window_checkerboard();
    } else {
        printf("unknown scenario %s\n", req);
        return 5;
    }
    printf("done\n");
    return 0;
}
