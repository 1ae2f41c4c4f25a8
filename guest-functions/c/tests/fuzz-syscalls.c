/* fuzz-syscalls: the guest of the fuzz crate's VM target (fuzz/src/targets/syscalls.rs).
 *
 * The request is a sequence of 64-byte records, little-endian:
 *
 *   u64 nr, u64 kinds, u64 raw[6]
 *
 * `kinds` holds 4 bits per argument (argument i in bits 4i..4i+3) saying how the raw value
 * becomes the argument:
 *
 *   0  the raw value itself (fds, lengths, flags, wild addresses)
 *   1  a pointer into the scratch buffer:        scratch + raw % SCRATCH
 *   2  a pointer to one of the paths below:      paths[raw % NPATHS]
 *   3  a pointer that runs off the scratch end:  scratch + SCRATCH - raw % 64
 *   4  a pointer into a page unmapped at start:  hole + raw % 4096
 *   5  an iovec array in scratch (raw % 8 + 1 entries of scratch pointers, lengths raw >> 3)
 *
 * Each record is issued as a raw `syscall` (no libc wrapper, no errno, no TLS, so a record that
 * moves FS or breaks brk cannot break the loop itself). At the end the guest writes
 * "done N\n" to stderr and exits 0. A record may legitimately end the call early (exit, a
 * fatal signal, a fault after it scribbled on its own memory, the deadline): the fuzzer only
 * requires that the call ends with an exit or one of the guest-caused CallErrors.
 */
#include <stddef.h>
#include <stdint.h>

#define SCRATCH 65536
#define MAX_RECORDS 16384

struct record {
    uint64_t nr, kinds, raw[6];
};

static struct record records[MAX_RECORDS];
static unsigned char scratch[SCRATCH] __attribute__((aligned(4096)));
static uint64_t iov[8][2];

static const char *const paths[] = {
    "/bin/fuzz-syscalls", "/", ".", "..", "/../../etc/passwd", "/data", "/data/hello.txt", "/dev/null",
    "/dev/snapcall-entropy", "/proc/self/exe", "/nonexistent", "", "/bin/../bin/./fuzz-syscalls",
    "/bin/fuzz-syscalls/", "/escape", "/tmp/new-file",
};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

static inline long raw_syscall(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static uint64_t hole;

static uint64_t arg(uint64_t kind, uint64_t raw)
{
    switch (kind) {
    case 1: return (uint64_t)scratch + raw % SCRATCH;
    case 2: return (uint64_t)paths[raw % NPATHS];
    case 3: return (uint64_t)scratch + SCRATCH - raw % 64;
    case 4: return hole + raw % 4096;
    case 5: {
        unsigned n = raw % 8 + 1;
        for (unsigned i = 0; i < n; i++) {
            iov[i][0] = (uint64_t)scratch + (raw * (i + 1)) % SCRATCH;
            iov[i][1] = (raw >> 3) % (SCRATCH / 2);
        }
        return (uint64_t)iov;
    }
    default: return raw;
    }
}

static size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[24];
    size_t n = 0, i;
    do {
        tmp[n++] = '0' + v % 10;
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

int main(void)
{
    size_t got = 0;
    for (;;) {
        long n = raw_syscall(0, 0, (long)records + got, sizeof(records) - got, 0, 0, 0);
        if (n <= 0)
            break;
        got += n;
        if (got == sizeof(records))
            break;
    }
    for (size_t i = 0; i < SCRATCH; i++)
        scratch[i] = (unsigned char)(i * 131 + 7);
    /* mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS) then munmap: a hole */
    hole = raw_syscall(9, 0, 4096, 3, 0x22, -1, 0);
    raw_syscall(11, hole, 4096, 0, 0, 0, 0);

    size_t count = got / sizeof(struct record);
    uint64_t done = 0;
    for (size_t i = 0; i < count; i++) {
        const struct record *r = &records[i];
        long a[6];
        for (int k = 0; k < 6; k++)
            a[k] = (long)arg((r->kinds >> (4 * k)) & 0xF, r->raw[k]);
        raw_syscall((long)r->nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        done++;
    }
    char line[40] = "done ";
    size_t len = 5 + fmt_u64(line + 5, done);
    line[len++] = '\n';
    raw_syscall(1, 2, (long)line, len, 0, 0, 0);
    raw_syscall(231, 0, 0, 0, 0, 0, 0);
    return 0;
}
