/* threads: glibc pthreads scheduled by the monitor on the VM's one vCPU, one scenario per
 * call, named by the request (vmm/tests/threads.rs).
 *
 *   pthreads     4 threads add to a mutex-guarded counter, a condvar hands work from a
 *                producer to a consumer, joins return each thread's value, TLS and tids
 *                are per thread
 *   spin         a thread spins until the main thread, asleep meanwhile, sets a flag:
 *                only preemption lets the main thread run again
 *   fpu          threads that spin on SSE/AVX arithmetic with different values check their
 *                registers survive being preempted
 *   exits        pthread_exit values, a detached thread, and the main thread leaving first
 *                (the last thread's exit status is the call's)
 *   too-many     creates threads until pthread_create fails, prints how many and the error
 *   yield        two threads take turns through sched_yield
 *   deadlock     two threads each wait for the other's mutex
 *   pipe         a read of an empty pipe, a poll, and a write to a full pipe, each ended by
 *                another thread
 *   mapping-switch  one thread changes a page's protection in a loop (each call rewrites
 *                page tables), another checks that its general registers survive its
 *                syscalls while the scheduler switches between them
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

static pid_t gettid_raw(void) { return (pid_t)syscall(SYS_gettid); }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- pthreads */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long counter;
static __thread long tls_value;
static int queue[16], q_len, q_done;

static void *adder(void *arg)
{
    long id = (long)arg;
    tls_value = id * 100;
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
        if (i % 1000 == 0)
            sched_yield();
    }
    return (void *)(tls_value + (gettid_raw() != getpid()));
}

static void *consumer(void *arg)
{
    long sum = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (q_len == 0 && !q_done)
            pthread_cond_wait(&cond, &lock);
        if (q_len == 0 && q_done)
            break;
        sum += queue[--q_len];
        pthread_cond_signal(&cond);
    }
    pthread_mutex_unlock(&lock);
    return (void *)sum;
}

static void pthreads(void)
{
    pthread_t t[4], c;
    tls_value = 7;
    for (long i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, adder, (void *)(i + 1)))
            printf("pthread_create failed\n");
    long rets = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        rets += (long)r;
    }
    printf("counter %ld, joined values %ld, main tls %ld\n", counter, rets, tls_value);

    pthread_create(&c, NULL, consumer, NULL);
    long expect = 0;
    for (int i = 1; i <= 100; i++) {
        pthread_mutex_lock(&lock);
        while (q_len == 16)
            pthread_cond_wait(&cond, &lock);
        queue[q_len++] = i;
        expect += i;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    q_done = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    void *sum;
    pthread_join(c, &sum);
    printf("consumer sum %ld of %ld\n", (long)sum, expect);
}

/* ---------------------------------------------------------------- spin */
static volatile int stop_spinning;
static volatile long spins;

static void *spinner(void *arg)
{
    while (!stop_spinning)
        spins++;
    return NULL;
}

static void spin(void)
{
    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    sleep_ms(30); /* the spinner runs meanwhile and never makes a syscall */
    stop_spinning = 1;
    pthread_join(t, NULL);
    printf("the main thread ran again while a thread spun: %s\n", spins > 0 ? "yes" : "no");
}

/* ---------------------------------------------------------------- fpu */
static volatile int fpu_go;

static void *fpu_worker(void *arg)
{
    long id = (long)arg;
    double x = (double)id + 0.25, acc = 0;
    long bad = 0;
    while (!fpu_go)
        ;
    /* Long enough to be preempted many times: every switch must restore x and acc. */
    for (long i = 0; i < 20000000; i++) {
        acc += x;
        if (i % 1000000 == 999999 && acc != x * (double)(i + 1))
            bad++;
        __asm__ volatile("" : "+x"(acc), "+x"(x));
    }
    return (void *)(bad + (acc == x * 20000000.0 ? 0 : 1000));
}

static void fpu(void)
{
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, fpu_worker, (void *)(i + 1));
    fpu_go = 1;
    long bad = 0;
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (long)r;
    }
    printf("fpu mismatches across switches: %ld\n", bad);
}

/* ---------------------------------------------------------------- exits */
static sem_t detached_done;

static void *exiter(void *arg)
{
    pthread_exit((void *)((long)arg * 3));
}

static void *detached(void *arg)
{
    sem_post(&detached_done);
    return NULL;
}

static void *last_one(void *arg)
{
    sleep_ms(10);
    printf("the last thread exits with 7\n");
    fflush(stdout);
    syscall(SYS_exit, 7);
    return NULL;
}

static void exits(void)
{
    pthread_t t, d, l;
    void *r;
    pthread_create(&t, NULL, exiter, (void *)14);
    pthread_join(t, &r);
    printf("pthread_exit value %ld\n", (long)r);
    sem_init(&detached_done, 0, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&d, &attr, detached, NULL);
    sem_wait(&detached_done);
    printf("detached thread ran\n");
    pthread_create(&l, NULL, last_one, NULL);
    fflush(stdout);
    syscall(SYS_exit, 0); /* only the main thread: the other goes on */
}

/* ---------------------------------------------------------------- too-many */
static sem_t release;

static void *parked(void *arg)
{
    sem_wait(&release);
    return NULL;
}

static void too_many(void)
{
    static pthread_t t[200];
    int n = 0, rc = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sem_init(&release, 0, 0);
    while (n < 200 && (rc = pthread_create(&t[n], &attr, parked, NULL)) == 0)
        n++;
    printf("created %d threads besides main, then %s\n", n, errname(rc));
    for (int i = 0; i < n; i++)
        sem_post(&release);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("all joined\n");
}

/* ---------------------------------------------------------------- yield */
static volatile int turn, yields;

static void *yielder(void *arg)
{
    for (int i = 0; i < 50; i++) {
        while (turn != 1)
            sched_yield();
        yields++;
        turn = 0;
    }
    return NULL;
}

static void yield_turns(void)
{
    pthread_t t;
    pthread_create(&t, NULL, yielder, NULL);
    for (int i = 0; i < 50; i++) {
        while (turn != 0)
            sched_yield();
        turn = 1;
    }
    pthread_join(t, NULL);
    printf("turns taken through sched_yield: %d\n", yields);
}

/* ---------------------------------------------------------------- deadlock */
static pthread_mutex_t m1 = PTHREAD_MUTEX_INITIALIZER, m2 = PTHREAD_MUTEX_INITIALIZER;

static void *other_order(void *arg)
{
    pthread_mutex_lock(&m2);
    sleep_ms(10);
    pthread_mutex_lock(&m1);
    return NULL;
}

static void deadlock(void)
{
    pthread_t t;
    pthread_mutex_lock(&m1);
    pthread_create(&t, NULL, other_order, NULL);
    sleep_ms(5);
    pthread_mutex_lock(&m2);
    printf("not reached\n");
}

/* ---------------------------------------------------------------- pipe */
static int pfd[2];

static void *late_writer(void *arg)
{
    sleep_ms(5);
    write(pfd[1], "hello", 5);
    sleep_ms(5);
    write(pfd[1], "x", 1);
    return NULL;
}

static void *bulk_writer(void *arg)
{
    static char chunk[10000];
    long total = 0;
    for (int i = 0; i < 20; i++)
        for (size_t done = 0; done < sizeof chunk;) { /* blocks once the pipe is full */
            ssize_t n = write(pfd[1], chunk + done, sizeof chunk - done);
            if (n <= 0)
                return (void *)-1L;
            done += (size_t)n;
            total += n;
        }
    close(pfd[1]);
    return (void *)total;
}

static void pipe_scenario(void)
{
    pthread_t t;
    char buf[16] = {0};
    pipe(pfd);
    pthread_create(&t, NULL, late_writer, NULL);
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    printf("read %zd bytes: %s\n", n, buf);
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    int ready = poll(&p, 1, 1000);
    printf("poll: %d ready, POLLIN %d\n", ready, (p.revents & POLLIN) != 0);
    read(pfd[0], buf, 1);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, bulk_writer, NULL);
    sleep_ms(5); /* let the writer fill the pipe and block */
    static char sink[4096];
    long got = 0;
    while ((n = read(pfd[0], sink, sizeof sink)) > 0)
        got += n;
    void *wrote;
    pthread_join(t, &wrote);
    printf("writer blocked on a full pipe until the reader drained it: %ld bytes\n", got == (long)wrote ? got : -1);
}

/* ---------------------------------------------------------------- mapping-switch */
static volatile int mapper_stop;

static void *mapper(void *arg)
{
    (void)arg;
    /* mprotect rewrites the page's table entry every time (a fresh anonymous mmap or munmap
     * of one page need not: unmapped memory is already absent from the tables). */
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    while (!mapper_stop) {
        mprotect(p, 4096, PROT_READ);
        mprotect(p, 4096, PROT_READ | PROT_WRITE);
        *(volatile char *)p = 1;
    }
    munmap(p, 4096);
    return NULL;
}

/* Fills rbx, r12-r15 (and, through the compiler, the register holding `v`) with values of
 * its own, makes a getppid syscall, and counts a round whose registers came back changed:
 * the thread that runs next after another's mmap must get its own registers back. */
static void mapping_switch(void)
{
    pthread_t t;
    pthread_create(&t, NULL, mapper, NULL);
    long bad = 0, rounds = 20000;
    for (long i = 0; i < rounds; i++) {
        uint64_t v = 0x5a5a000000000000ull + ((uint64_t)i << 8), o[5];
        __asm__ volatile("mov %[v], %%rbx\n\t"
                         "lea 1(%[v]), %%r12\n\t"
                         "lea 2(%[v]), %%r13\n\t"
                         "lea 3(%[v]), %%r14\n\t"
                         "lea 4(%[v]), %%r15\n\t"
                         "mov $110, %%eax\n\t" /* getppid */
                         "syscall\n\t"
                         "mov %%rbx, 0(%[o])\n\t"
                         "mov %%r12, 8(%[o])\n\t"
                         "mov %%r13, 16(%[o])\n\t"
                         "mov %%r14, 24(%[o])\n\t"
                         "mov %%r15, 32(%[o])\n\t"
                         :
                         : [v] "r"(v), [o] "r"(o)
                         : "rax", "rcx", "r11", "rbx", "r12", "r13", "r14", "r15", "memory");
        for (int k = 0; k < 5; k++)
            if (o[k] != v + (uint64_t)k) {
                bad++;
                break;
            }
    }
    mapper_stop = 1;
    pthread_join(t, NULL);
    printf("rounds with changed registers: %ld of %ld\n", bad, rounds);
}

int main(void)
{
    char req[64] = {0};
    ssize_t n = read(0, req, sizeof req - 1);
    if (n > 0 && req[n - 1] == '\n')
        req[n - 1] = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(req, "pthreads"))
        pthreads();
    else if (!strcmp(req, "spin"))
        spin();
    else if (!strcmp(req, "fpu"))
        fpu();
    else if (!strcmp(req, "exits"))
        exits();
    else if (!strcmp(req, "too-many"))
        too_many();
    else if (!strcmp(req, "yield"))
        yield_turns();
    else if (!strcmp(req, "deadlock"))
        deadlock();
    else if (!strcmp(req, "pipe"))
        pipe_scenario();
    else if (!strcmp(req, "mapping-switch"))
        mapping_switch();
    else
        printf("unknown scenario %s\n", req);
    return 0;
}
