/* signals: signal handlers run by the monitor, one scenario per call, named by the request
 * (vmm/tests/signals.rs).
 *
 *   kill            kill/raise/tgkill to itself with SA_SIGINFO handlers: signo, code, pid
 *   mask            a blocked signal stays pending (sigpending) and runs once unblocked;
 *                   sa_mask and the signal itself are blocked inside the handler, not with
 *                   SA_NODEFER; SIG_IGN discards
 *   resethand       SA_RESETHAND: the second raise finds the default action (killed by 10)
 *   default         raise(SIGTERM) with no handler: killed by signal 15
 *   alarm           setitimer fires during pause() (EINTR), then every 10 ms while the
 *                   program spins without a syscall
 *   segv            a NULL dereference's handler siglongjmps out; another fixes rax in the
 *                   ucontext and returns, and the instruction runs again
 *   fpe ill         division by zero and ud2 with handlers that siglongjmp
 *   overflow        running out of stack with a SIGSEGV handler on a sigaltstack
 *   fpu-kept        a handler that clobbers xmm0 leaves the interrupted code's xmm0 alone
 *   sigsuspend      waits with SIGALRM unblocked only while suspended
 *   sigtimedwait    takes a blocked signal another thread sends; times out on none
 *   restart         a thread blocked in sem_wait: an SA_RESTART handler leaves it waiting,
 *                   another one makes it return EINTR
 *   thread-target   tgkill to another thread runs the handler in that thread
 *   frame-rip       (hostile) the handler puts a kernel address in the saved rip
 *   frame-flags     (hostile) the handler sets every rflags bit but TF and AC and a kernel CS in
 *                   the frame (Linux would SIGSEGV on that CS; here CS is always the user's)
 *   frame-fpu       (hostile) the handler scribbles on the saved XSAVE image
 *   nested-storm    (hostile) a SA_NODEFER handler that raises itself forever
 *   kill-storm      5000 kills to itself, each handled
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include "common.h"

static volatile sig_atomic_t got, got_code, got_pid, got_count;
static sigjmp_buf jump;

static void on(int sig, void (*h)(int, siginfo_t *, void *), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL))
        printf("sigaction failed: %s\n", errname(errno));
}

static void record(int sig, siginfo_t *si, void *uc)
{
    got = sig;
    got_code = si->si_code;
    got_pid = si->si_pid;
    got_count++;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void kill_self(void)
{
    on(SIGUSR1, record, 0);
    kill(getpid(), SIGUSR1);
    printf("kill: handler saw %d, code %d (SI_USER), pid %s\n", got, got_code, got_pid == getpid() ? "ours" : "other");
    raise(SIGUSR1);
    printf("raise: handler saw %d, code %d (SI_TKILL)\n", got, got_code);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1);
    printf("tgkill: handler ran %d times\n", got_count);
}

/* ---------------------------------------------------------------- mask */
static volatile sig_atomic_t usr2_blocked_inside, usr1_blocked_inside;

static void check_mask(int sig, siginfo_t *si, void *uc)
{
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    usr1_blocked_inside = sigismember(&now, SIGUSR1);
    usr2_blocked_inside = sigismember(&now, SIGUSR2);
    got_count++;
}

static void mask(void)
{
    sigset_t set, pending;
    on(SIGUSR1, record, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    sigpending(&pending);
    printf("blocked: ran %d, pending %d\n", got_count, sigismember(&pending, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    printf("unblocked: ran %d\n", got_count);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = check_mask;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("inside the handler: SIGUSR1 blocked %d, sa_mask's SIGUSR2 blocked %d\n", usr1_blocked_inside,
           usr2_blocked_inside);
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("with SA_NODEFER: SIGUSR1 blocked %d\n", usr1_blocked_inside);
    sigset_t after;
    sigprocmask(SIG_BLOCK, NULL, &after);
    printf("after the handlers: SIGUSR1 blocked %d\n", sigismember(&after, SIGUSR1));
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    printf("SIG_IGN: still here\n");
}

static void resethand(void)
{
    on(SIGUSR1, record, SA_RESETHAND);
    raise(SIGUSR1);
    printf("first raise handled: %d\n", got_count);
    fflush(stdout);
    raise(SIGUSR1);
    printf("not reached\n");
}

/* ---------------------------------------------------------------- alarm */
static void alarm_scenario(void)
{
    on(SIGALRM, record, 0);
    struct itimerval it = {{0, 0}, {0, 30000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int rc = pause();
    printf("pause: %d %s, handler saw %d code %d\n", rc, errname(errno), got, got_code);
    got_count = 0;
    it = (struct itimerval){{0, 10000}, {0, 10000}};
    setitimer(ITIMER_REAL, &it, NULL);
    while (got_count < 5)
        ; /* no syscall: the monitor must interrupt the loop to deliver */
    it = (struct itimerval){{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
    printf("periodic: at least 5 ticks while spinning\n");
    alarm(100);
    printf("alarm(0) after alarm(100): %u left\n", alarm(0));
}

/* ---------------------------------------------------------------- faults */
static volatile uintptr_t fault_addr;
static volatile int fault_code;

static void jump_out(int sig, siginfo_t *si, void *uc)
{
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    got = sig;
    siglongjmp(jump, 1);
}

static long target = 42;

static void fix_rax(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    uc->uc_mcontext.gregs[REG_RAX] = (greg_t)&target;
    got_count++;
}

static void segv(void)
{
    fault_code = 16;
    on(SIGSEGV, jump_out, 0);
    if (!sigsetjmp(jump, 1)) {
        *(volatile int *)(uintptr_t)fault_code = 1; /* 16, hidden from the compiler */
        printf("not reached\n");
    }
    printf("NULL write: signal %d, si_addr %#lx, code %d (SEGV_MAPERR)\n", got, (unsigned long)fault_addr, fault_code);
    on(SIGSEGV, fix_rax, 0);
    long out;
    __asm__ volatile("xor %%eax, %%eax\n\tmov (%%rax), %0" : "=r"(out) : : "rax", "memory");
    printf("fixed and returned: read %ld after %d handler run(s)\n", out, got_count);
}

static void fpe(void)
{
    on(SIGFPE, jump_out, 0);
    volatile int zero = 0, seven = 7;
    if (!sigsetjmp(jump, 1))
        printf("not reached %d\n", seven / zero);
    printf("division by zero: signal %d, code %d (FPE_INTDIV)\n", got, fault_code);
}

static void ill(void)
{
    on(SIGILL, jump_out, 0);
    if (!sigsetjmp(jump, 1))
        __asm__ volatile("ud2");
    printf("ud2: signal %d, code %d (ILL_ILLOPN)\n", got, fault_code);
}

#pragma GCC diagnostic ignored "-Winfinite-recursion"
static int recurse(int n)
{
    volatile char pad[4096];
    pad[0] = (char)n;
    return recurse(n + 1) + pad[0];
}

static void overflow(void)
{
    static char alt[64 * 1024];
    stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    on(SIGSEGV, jump_out, SA_ONSTACK);
    if (!sigsetjmp(jump, 1))
        recurse(0);
    printf("stack overflow caught on the alternate stack: signal %d\n", got);
}

/* ---------------------------------------------------------------- fpu-kept */
static void clobber_xmm(int sig, siginfo_t *si, void *uc)
{
    __asm__ volatile("pcmpeqd %%xmm0, %%xmm0" : : : "xmm0");
    got_count++;
}

static void fpu_kept(void)
{
    on(SIGUSR1, clobber_xmm, 0);
    double in = 1234.5, out;
    long pid = getpid();
    /* kill(pid, SIGUSR1) as a raw syscall, with the value in xmm0 across it. */
    __asm__ volatile("movq %[in], %%xmm0\n\t"
                     "mov $62, %%eax\n\t"
                     "mov %[pid], %%rdi\n\t"
                     "mov $10, %%esi\n\t"
                     "syscall\n\t"
                     "movq %%xmm0, %[out]"
                     : [out] "=r"(out)
                     : [in] "r"(in), [pid] "r"(pid)
                     : "rax", "rdi", "rsi", "rcx", "r11", "xmm0", "memory");
    printf("handler ran %d, xmm0 after it: %g\n", got_count, out);
}

/* ---------------------------------------------------------------- waits */
static void sigsuspend_scenario(void)
{
    sigset_t block, empty, now;
    on(SIGALRM, record, 0);
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    struct itimerval it = {{0, 0}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
    sigemptyset(&empty);
    int rc = sigsuspend(&empty);
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("sigsuspend: %d %s, handler saw %d, SIGALRM blocked again %d\n", rc, errname(errno), got,
           sigismember(&now, SIGALRM));
}

static void *send_usr1_later(void *arg)
{
    sleep_ms(10);
    kill(getpid(), SIGUSR1);
    return NULL;
}

static void sigtimedwait_scenario(void)
{
    sigset_t set;
    siginfo_t si;
    on(SIGUSR1, record, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    pthread_create(&t, NULL, send_usr1_later, NULL);
    int sig = sigwaitinfo(&set, &si);
    pthread_join(t, NULL);
    printf("sigwaitinfo: %d (si_signo %d), handler ran %d\n", sig, si.si_signo, got_count);
    struct timespec ts = {0, 20 * 1000000L};
    sig = sigtimedwait(&set, &si, &ts);
    printf("sigtimedwait with nothing sent: %d %s\n", sig, errname(errno));
}

static sem_t sem;
static volatile int wait_rc = 99, wait_errno;

static void *sem_waiter(void *arg)
{
    int rc;
    while ((rc = sem_wait(&sem)) == 0)
        printf("sem_wait returned 0\n");
    wait_rc = rc;
    wait_errno = errno;
    return NULL;
}

static pthread_t waiter;

static void restart(void)
{
    on(SIGUSR1, record, SA_RESTART);
    on(SIGUSR2, record, 0);
    sem_init(&sem, 0, 0);
    pthread_create(&waiter, NULL, sem_waiter, NULL);
    sleep_ms(10);
    pthread_kill(waiter, SIGUSR1);
    sleep_ms(10);
    printf("after an SA_RESTART handler: handler ran %d, waiter still waiting %d\n", got_count, wait_rc == 99);
    sem_post(&sem);
    sleep_ms(10);
    pthread_kill(waiter, SIGUSR2);
    pthread_join(waiter, NULL);
    printf("after a handler without SA_RESTART: sem_wait %d %s\n", wait_rc, errname(wait_errno));
}

static volatile pid_t handler_tid;

static void record_tid(int sig, siginfo_t *si, void *uc)
{
    handler_tid = (pid_t)syscall(SYS_gettid);
}

static volatile pid_t other_tid;
static volatile int other_stop;

static void *other(void *arg)
{
    other_tid = (pid_t)syscall(SYS_gettid);
    while (!other_stop)
        sleep_ms(1);
    return NULL;
}

static void thread_target(void)
{
    on(SIGUSR1, record_tid, 0);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    while (!other_tid)
        sleep_ms(1);
    pthread_kill(t, SIGUSR1);
    while (!handler_tid)
        sleep_ms(1);
    other_stop = 1;
    pthread_join(t, NULL);
    printf("tgkill ran the handler in the target thread: %s\n",
           handler_tid == other_tid && handler_tid != getpid() ? "yes" : "no");
}

/* ---------------------------------------------------------------- hostile frames */
static void frame_rip(int sig, siginfo_t *si, void *ucv)
{
    ((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP] = (greg_t)0xffff800000001000UL;
}

static volatile int after_flags;

static void frame_flags(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    uc->uc_mcontext.gregs[REG_EFL] = ~0x40100L; /* every bit but TF and AC (the program may set those itself: TF traps next, AC checks alignment) */
    uc->uc_mcontext.gregs[REG_CSGSFS] = 0x10; /* the kernel's CS */
}

static void frame_fpu(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    char *fp = (char *)uc->uc_mcontext.fpregs;
    memset(fp + 24, 0xff, 4);    /* MXCSR: reserved bits set */
    memset(fp + 512, 0xff, 64); /* the XSAVE header: reserved bits set */
}

static void hostile_frame(void (*h)(int, siginfo_t *, void *))
{
    on(SIGUSR1, h, 0);
    raise(SIGUSR1);
    unsigned long flags;
    unsigned short cs;
    __asm__ volatile("pushfq\n\tpop %0" : "=r"(flags) : : "memory");
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    printf("after sigreturn: cpl %d, iopl %lu, IF %lu, TF %lu\n", cs & 3, (flags >> 12) & 3, (flags >> 9) & 1,
           (flags >> 8) & 1);
}

static void nested(int sig, siginfo_t *si, void *uc)
{
    got_count++;
    raise(SIGUSR1);
}

static void kill_storm(void)
{
    on(SIGUSR1, record, 0);
    for (int i = 0; i < 5000; i++)
        kill(getpid(), SIGUSR1);
    printf("kill storm: %d handled\n", got_count);
}

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1);
    if (n > 0 && req[n - 1] == '\n')
        req[n - 1] = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(req, "kill"))
        kill_self();
    else if (!strcmp(req, "mask"))
        mask();
    else if (!strcmp(req, "resethand"))
        resethand();
    else if (!strcmp(req, "default"))
        raise(SIGTERM);
    else if (!strcmp(req, "alarm"))
        alarm_scenario();
    else if (!strcmp(req, "segv"))
        segv();
    else if (!strcmp(req, "fpe"))
        fpe();
    else if (!strcmp(req, "ill"))
        ill();
    else if (!strcmp(req, "overflow"))
        overflow();
    else if (!strcmp(req, "fpu-kept"))
        fpu_kept();
    else if (!strcmp(req, "sigsuspend"))
        sigsuspend_scenario();
    else if (!strcmp(req, "sigtimedwait"))
        sigtimedwait_scenario();
    else if (!strcmp(req, "restart"))
        restart();
    else if (!strcmp(req, "thread-target"))
        thread_target();
    else if (!strcmp(req, "frame-rip"))
        hostile_frame(frame_rip);
    else if (!strcmp(req, "frame-flags"))
        hostile_frame(frame_flags);
    else if (!strcmp(req, "frame-fpu"))
        hostile_frame(frame_fpu);
    else if (!strcmp(req, "nested-storm")) {
        on(SIGUSR1, nested, SA_NODEFER);
        raise(SIGUSR1);
    } else if (!strcmp(req, "kill-storm"))
        kill_storm();
    else
        printf("unknown scenario %s\n", req);
    return 0;
}
