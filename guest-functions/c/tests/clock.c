/* clock: reads its request (stdin to EOF), then prints what the clock says, one key=value a line:
 *
 *   realtime_ns=      clock_gettime(CLOCK_REALTIME)
 *   monotonic_ns=     clock_gettime(CLOCK_MONOTONIC)
 *   gettimeofday_us=  gettimeofday()
 *   time=             time(NULL)
 *   getres_ns=        clock_getres(CLOCK_MONOTONIC)
 *   vdso=             AT_SYSINFO_EHDR (0: no vDSO, every read is a syscall)
 *   loops=            N clock_gettime(CLOCK_MONOTONIC) calls, when the request is "loops=N"
 *   loop_ns=          monotonic time those N calls took
 *   monotonic_ok=     1 if no call of the N went backwards
 *
 * With the vDSO installed, none of these reads exits the VM (docs/vdso.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns(struct timespec ts)
{
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void)
{
    char req[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(0, req + len, sizeof req - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof req - 1) {
            char sink[4096];
            while (read(0, sink, sizeof sink) > 0) {
            }
            break;
        }
    }
    req[len] = 0;

    struct timespec rt, mono, res;
    struct timeval tv;
    int r1 = clock_gettime(CLOCK_REALTIME, &rt);
    int r2 = clock_gettime(CLOCK_MONOTONIC, &mono);
    int r3 = gettimeofday(&tv, NULL);
    time_t t = time(NULL);
    int r4 = clock_getres(CLOCK_MONOTONIC, &res);
    if (r1 || r2 || r3 || r4 || t == (time_t)-1) {
        printf("error=%d,%d,%d,%d,%lld\n", r1, r2, r3, r4, (long long)t);
        return 1;
    }
    printf("realtime_ns=%lld\n", ns(rt));
    printf("monotonic_ns=%lld\n", ns(mono));
    printf("gettimeofday_us=%lld\n", (long long)tv.tv_sec * 1000000LL + tv.tv_usec);
    printf("time=%lld\n", (long long)t);
    printf("getres_ns=%lld\n", ns(res));
    printf("vdso=%#lx\n", getauxval(AT_SYSINFO_EHDR));

    long loops = strncmp(req, "loops=", 6) == 0 ? atol(req + 6) : 0;
    if (loops > 0) {
        struct timespec a, prev, now;
        int ok = 1;
        clock_gettime(CLOCK_MONOTONIC, &a);
        prev = a;
        for (long i = 0; i < loops; i++) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (ns(now) < ns(prev))
                ok = 0;
            prev = now;
        }
        printf("loops=%ld\n", loops);
        printf("loop_ns=%lld\n", ns(prev) - ns(a));
        printf("monotonic_ok=%d\n", ok);
    }
    return 0;
}
