/*
 * snapcall vDSO: clock_gettime, gettimeofday, time, clock_getres and getcpu for a guest with
 * no kernel, answered at CPL3 from a time page the monitor keeps, so reading the clock never
 * exits the VM.
 *
 * The monitor (vmm/src/vdso.rs) writes the time page in the guest page just before this image
 * and announces the image with AT_SYSINFO_EHDR. Time is linear in the TSC:
 *
 *     ns(clock) = base_ns(clock) + ((rdtsc() - tsc_base) * mult) >> shift
 *
 * Anything the page cannot answer (page not valid, an unsupported clock id, a TSC reading
 * before tsc_base, a writer that never finishes) goes to the real `syscall`, which the
 * monitor emulates, so behaviour stays Linux-like. The functions return 0 or -errno, as
 * Linux's vDSO does.
 *
 * Keep in step with `TimePage` in vmm/src/vdso.rs (layout version 1, docs/vdso.md).
 * Build with build.sh only: the committed vmm/src/vdso/vdso.so must match it byte for byte.
 */

typedef unsigned int u32;
typedef unsigned long u64;
typedef long s64;

struct timespec64 {
	s64 tv_sec;
	s64 tv_nsec;
};

struct timeval64 {
	s64 tv_sec;
	s64 tv_usec;
};

struct timezone_ {
	int tz_minuteswest;
	int tz_dsttime;
};

/* The time page (little-endian, 8-byte aligned fields). */
struct time_page {
	u32 seq;          /*  0: seqlock counter, odd while the monitor writes */
	u32 flags;        /*  4: TP_VALID, else every call takes the syscall */
	u64 tsc_base;     /*  8: guest TSC at the reference instant */
	u64 mult;         /* 16: ns per tick, << shift */
	u32 shift;        /* 24 */
	u32 version;      /* 28: TP_VERSION */
	u64 realtime_ns;  /* 32: CLOCK_REALTIME at the reference instant, ns since the epoch */
	u64 monotonic_ns; /* 40: CLOCK_MONOTONIC at the reference instant */
	u64 tsc_hz;       /* 48: for information (and tools) */
};

#define TP_VALID 1u
#define TP_VERSION 1u
#define MAX_RETRIES 100000

/* Defined by vdso.lds: the page before the image. Hidden, so reached RIP-relatively. */
extern const volatile struct time_page snapcall_time_page __attribute__((visibility("hidden")));

#define NSEC_PER_SEC 1000000000UL
#define EINVAL 22
#define EFAULT 14

#define NR_gettimeofday 96
#define NR_time 201
#define NR_clock_gettime 228
#define NR_clock_getres 229
#define NR_getcpu 309

#define barrier() __asm__ __volatile__("" ::: "memory")

static inline long sys2(long nr, long a, long b)
{
	long ret;
	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "a"(nr), "D"(a), "S"(b)
			     : "rcx", "r11", "memory");
	return ret;
}

static inline u64 rdtsc_ordered(void)
{
	u32 lo, hi;
	/* lfence keeps rdtsc from running ahead of the seqlock read before it. */
	__asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
	return ((u64)hi << 32) | lo;
}

/* Which base a clock id reads: 0 realtime, 1 monotonic, -1 not from the page. The mapping is
 * the monitor's (vmm/src/syscalls.rs host_clock): the coarse clocks read the fine clock,
 * MONOTONIC_RAW and BOOTTIME read MONOTONIC. The ALARM and CPU-time clocks take the syscall. */
static inline int clock_base(long clock)
{
	switch (clock) {
	case 0: /* CLOCK_REALTIME */
	case 5: /* CLOCK_REALTIME_COARSE */
		return 0;
	case 1: /* CLOCK_MONOTONIC */
	case 4: /* CLOCK_MONOTONIC_RAW */
	case 6: /* CLOCK_MONOTONIC_COARSE */
	case 7: /* CLOCK_BOOTTIME */
		return 1;
	default:
		return -1;
	}
}

/* Nanoseconds of `base` now, or -1 when the page cannot say (take the syscall). Every field
 * is read between the two reads of the counter and judged only after the second one, so a
 * torn read is retried, never acted on. */
static inline s64 page_ns(int base)
{
	const volatile struct time_page *tp = &snapcall_time_page;
	for (int tries = 0; tries < MAX_RETRIES; tries++) {
		u32 seq = tp->seq;
		if (seq & 1) {
			__asm__ __volatile__("pause");
			continue;
		}
		barrier();
		u32 flags = tp->flags;
		u32 version = tp->version;
		u64 tsc = rdtsc_ordered();
		u64 tsc_base = tp->tsc_base;
		u64 mult = tp->mult;
		u32 shift = tp->shift;
		u64 hz = tp->tsc_hz;
		u64 ns = base ? tp->monotonic_ns : tp->realtime_ns;
		barrier();
		if (tp->seq != seq)
			continue;
		if (flags != TP_VALID || version != TP_VERSION || shift > 63)
			return -1;
		s64 delta = (s64)(tsc - tsc_base);
		if (delta < 0) {
			/* A reading a little before the base (TSCs of host CPUs a hair apart, the
			 * vCPU having moved) counts as the base, as Linux's vDSO does; far before
			 * it means the page is not this VM's: ask the monitor. */
			if ((u64)-delta > (hz >> 10))
				return -1;
			delta = 0;
		}
		ns += (u64)(((unsigned __int128)(u64)delta * mult) >> shift);
		if ((s64)ns < 0)
			return -1;
		return (s64)ns;
	}
	return -1;
}

int __vdso_clock_gettime(long clock, struct timespec64 *ts)
{
	int base = clock_base(clock);
	if (base >= 0) {
		s64 ns = page_ns(base);
		if (ns >= 0) {
			ts->tv_sec = (u64)ns / NSEC_PER_SEC;
			ts->tv_nsec = (u64)ns % NSEC_PER_SEC;
			return 0;
		}
	}
	return sys2(NR_clock_gettime, clock, (long)ts);
}

int __vdso_gettimeofday(struct timeval64 *tv, struct timezone_ *tz)
{
	s64 ns = page_ns(0);
	if (ns < 0)
		return sys2(NR_gettimeofday, (long)tv, (long)tz);
	if (tv) {
		tv->tv_sec = (u64)ns / NSEC_PER_SEC;
		tv->tv_usec = (u64)ns % NSEC_PER_SEC / 1000;
	}
	if (tz) {
		/* Linux reports sys_tz, which is zero unless settimeofday set it. */
		tz->tz_minuteswest = 0;
		tz->tz_dsttime = 0;
	}
	return 0;
}

long __vdso_time(long *t)
{
	s64 ns = page_ns(0);
	if (ns < 0)
		return sys2(NR_time, (long)t, 0);
	long secs = (u64)ns / NSEC_PER_SEC;
	if (t)
		*t = secs;
	return secs;
}

int __vdso_clock_getres(long clock, struct timespec64 *res)
{
	/* The clocks the page serves have 1 ns resolution (as the monitor's syscall says). */
	if (clock_base(clock) < 0 || !(snapcall_time_page.flags == TP_VALID))
		return sys2(NR_clock_getres, clock, (long)res);
	if (res) {
		res->tv_sec = 0;
		res->tv_nsec = 1;
	}
	return 0;
}

/* One vCPU: the program always runs on CPU 0 of node 0. */
int __vdso_getcpu(unsigned *cpu, unsigned *node, void *unused)
{
	(void)unused;
	if (cpu)
		*cpu = 0;
	if (node)
		*node = 0;
	return 0;
}

int clock_gettime(long, struct timespec64 *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval64 *, struct timezone_ *) __attribute__((weak, alias("__vdso_gettimeofday")));
long time(long *) __attribute__((weak, alias("__vdso_time")));
int clock_getres(long, struct timespec64 *) __attribute__((weak, alias("__vdso_clock_getres")));
int getcpu(unsigned *, unsigned *, void *) __attribute__((weak, alias("__vdso_getcpu")));

