/* leftover: looks for anything an earlier call could have left behind, then leaves a secret
 * everywhere it looked, for the next call to find if it ever gets this call's memory or
 * registers: fresh anonymous memory (mmap), the heap's new top (sbrk), stack below what the
 * snapshot holds, a vector register, and a 2 MiB window of data the snapshot holds, which
 * every call reads and writes whole (so the pool fills it as a huge window, from a huge
 * page an earlier VM used: huge_page_cache.rs), and a few pages of data the snapshot holds
 * outside that window (4 KiB copy-on-write pages of the snapshot, which memory_reuse.rs must
 * put back). Every call must print "clean", whether its VM is new, around memory reused from
 * a finished VM (the default), or a recycled shell (the experiment). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SECRET 0x6c6566746f766572ull /* "leftover" */
#define MMAP_BYTES (1 << 20)
#define HEAP_BYTES (64 << 10)
#define STACK_BYTES (256 << 10)
#define WINDOW_BYTES (2 << 20)
#define INITIAL 0x696e697469616c21ull /* "initial!" */

/* Written before the first read, so the snapshot holds it: a call must find it as it was. */
static volatile uint64_t window[WINDOW_BYTES / 8] __attribute__((aligned(WINDOW_BYTES)));
/* Too small for a huge window of its own: mapped from the snapshot 4 KiB at a time. */
#define SMALL_BYTES (16 << 10)
static volatile uint64_t small[SMALL_BYTES / 8] __attribute__((aligned(4096)));

static int has_secret(const volatile uint64_t *p, size_t words)
{
    for (size_t i = 0; i < words; i++)
        if (p[i] == SECRET)
            return 1;
    return 0;
}

static int nonzero(const volatile unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 1;
    return 0;
}

/* Not inlined, so its frame lies below main's, in stack the snapshot never held data in. */
static __attribute__((noinline)) int deep_stack(int leave)
{
    volatile uint64_t frame[STACK_BYTES / 8];
    int found = has_secret(frame, STACK_BYTES / 8);
    if (leave)
        for (size_t i = 0; i < STACK_BYTES / 8; i++)
            frame[i] = SECRET;
    return found;
}

int main(void)
{
    for (size_t i = 0; i < WINDOW_BYTES / 8; i++)
        window[i] = INITIAL;
    for (size_t i = 0; i < SMALL_BYTES / 8; i++)
        small[i] = INITIAL;
    char buf[4096];
    while (read(0, buf, sizeof buf) > 0)
        ;
    uint64_t xmm;
    __asm__ volatile("movq %%xmm15, %0" : "=r"(xmm));
    const char *found[6];
    int n = 0;
    if (xmm == SECRET)
        found[n++] = "xmm15";
    for (size_t i = 0; i < WINDOW_BYTES / 8; i++)
        if (window[i] != INITIAL) {
            found[n++] = window[i] == SECRET ? "snapshot data" : "snapshot data (changed)";
            break;
        }
    for (size_t i = 0; i < SMALL_BYTES / 8; i++)
        if (small[i] != INITIAL) {
            found[n++] = small[i] == SECRET ? "small snapshot data" : "small snapshot data (changed)";
            break;
        }
    unsigned char *m = mmap(NULL, MMAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        puts("mmap failed");
        return 1;
    }
    if (nonzero(m, MMAP_BYTES))
        found[n++] = "mmap";
    unsigned char *h = sbrk(HEAP_BYTES);
    if (h == (void *)-1) {
        puts("sbrk failed");
        return 1;
    }
    if (nonzero(h, HEAP_BYTES))
        found[n++] = "heap";
    if (deep_stack(0))
        found[n++] = "stack";
    if (n == 0)
        puts("clean");
    for (int i = 0; i < n; i++)
        printf("leftover in %s\n", found[i]);
    fflush(stdout);
    /* Leave the secret behind. */
    for (size_t i = 0; i < MMAP_BYTES / 8; i++)
        ((uint64_t *)m)[i] = SECRET;
    for (size_t i = 0; i < HEAP_BYTES / 8; i++)
        ((uint64_t *)h)[i] = SECRET;
    deep_stack(1);
    for (size_t i = 0; i < WINDOW_BYTES / 8; i++)
        window[i] = SECRET;
    for (size_t i = 0; i < SMALL_BYTES / 8; i++)
        small[i] = SECRET;
    __asm__ volatile("movq %0, %%xmm15" : : "r"((uint64_t)SECRET));
    /* Exit with the secret still in xmm15 (_exit does not touch vector registers). */
    _exit(0);
}
