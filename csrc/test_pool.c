/* The pool's own test: cc -std=c99 -pthread pool.c test_pool.c (-DCHARGEN_NO_THREADS: no threads)
 * Every chunk runs once, on the caller alone where asked, with workers that do take chunks;
 * several callers on one pool at once; idle workers asleep; a process forked after the
 * workers started. */
#if !defined(_WIN32) && !defined(CHARGEN_NO_THREADS)
#define _GNU_SOURCE
#define THREADS 1
#else
#define THREADS 0
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

#if THREADS
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#endif

static int checks, failed;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failed++;
        printf("FAILED: %s\n", what);
    }
}

/* ------------------------------------------------------------------ a loop that records its runs */
#define MAX_CHUNKS 4096
typedef struct {
    int runs[MAX_CHUNKS];
    int on_caller[MAX_CHUNKS];
    int sleep_us; /* each chunk sleeps this long: the caller then leaves the CPU to the workers */
#if THREADS
    pthread_t caller;
#endif
} record_t;

static void record(void *arg, size_t c) {
    record_t *r = arg;
    __atomic_fetch_add(&r->runs[c], 1, __ATOMIC_RELAXED);
#if THREADS
    r->on_caller[c] = pthread_equal(pthread_self(), r->caller) != 0;
    if (r->sleep_us) {
        struct timespec t = {0, r->sleep_us * 1000L};
        nanosleep(&t, NULL);
    }
#else
    r->on_caller[c] = 1;
#endif
}

static void reset(record_t *r, int sleep_us) {
    memset(r, 0, sizeof *r);
    r->sleep_us = sleep_us;
#if THREADS
    r->caller = pthread_self();
#endif
}

/* every chunk ran once; returns how many ran on the caller */
static size_t once_each(const record_t *r, size_t chunks, int *ok) {
    size_t c, mine = 0;
    *ok = 1;
    for (c = 0; c < MAX_CHUNKS; c++) {
        *ok &= r->runs[c] == (c < chunks);
        mine += c < chunks && r->on_caller[c];
    }
    return mine;
}

static record_t rec;

static void test_chunks(chargen_pool *p, const char *name) {
    static const size_t sizes[] = {0, 1, 2, 3, 7, 64, 1000, MAX_CHUNKS};
    static const int threads[] = {0, 1, 2, 3, 99};
    size_t i, j;
    char what[160];
    for (i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (j = 0; j < sizeof threads / sizeof *threads; j++) {
            int ok, rep, all_ok = 1, alone = 1;
            for (rep = 0; rep < 20; rep++) {
                size_t mine;
                reset(&rec, 0);
                chargen_pool_run(p, threads[j], sizes[i], record, &rec);
                mine = once_each(&rec, sizes[i], &ok);
                all_ok &= ok;
                alone &= mine == sizes[i];
            }
            snprintf(what, sizeof what, "%s: %zu chunks on %d threads: each runs once", name, sizes[i], threads[j]);
            check(all_ok, what);
            if (threads[j] == 1 || !p) {
                snprintf(what, sizeof what, "%s: %zu chunks on %d threads: all on the caller", name, sizes[i], threads[j]);
                check(alone, what);
            }
        }
}

#if THREADS
/* the workers take chunks: chunks that sleep leave them the CPU whatever the machine's load */
static int workers_help(chargen_pool *p, int threads) {
    int ok, rep;
    for (rep = 0; rep < 20; rep++) {
        reset(&rec, 300);
        chargen_pool_run(p, threads, 40, record, &rec);
        if (once_each(&rec, 40, &ok) < 40 && ok) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ several callers at once */
#define CALLERS 4
typedef struct {
    chargen_pool *pool;
    int ok;
} caller_t;

static void count(void *arg, size_t c) { __atomic_fetch_add(&((int *)arg)[c], 1, __ATOMIC_RELAXED); }

static void *caller_main(void *arg) {
    caller_t *c = arg;
    int runs[97], i, k;
    c->ok = 1;
    for (i = 0; i < 2000; i++) {
        const size_t chunks = 1 + (size_t)(i * 37) % 97;
        memset(runs, 0, sizeof runs);
        chargen_pool_run(c->pool, 0, chunks, count, runs);
        for (k = 0; k < 97; k++) c->ok &= runs[k] == ((size_t)k < chunks);
    }
    return NULL;
}

static void test_callers(chargen_pool *p) {
    pthread_t tid[CALLERS];
    caller_t c[CALLERS];
    int i, ok = 1;
    for (i = 0; i < CALLERS; i++) {
        c[i].pool = p;
        pthread_create(&tid[i], NULL, caller_main, &c[i]);
    }
    for (i = 0; i < CALLERS; i++) pthread_join(tid[i], NULL), ok &= c[i].ok;
    check(ok, "four threads running loops on one pool at once: every chunk of every loop once");
}

/* ------------------------------------------------------------------ idle workers sleep */
static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_idle(chargen_pool *p) {
    struct timespec t = {0, 300 * 1000000L};
    double before, burnt;
    char what[160];
    reset(&rec, 0);
    chargen_pool_run(p, 0, 64, record, &rec);
    before = cpu_s();
    nanosleep(&t, NULL);
    burnt = cpu_s() - before;
    snprintf(what, sizeof what, "idle workers sleep: %.1f ms of CPU in 300 ms after a loop", burnt * 1e3);
    check(burnt < 0.03, what);
}

/* ------------------------------------------------------------------ fork */
/* a child forked after the workers started: the old pool runs its loops alone there (and does
 * not hang), a new pool has workers again; the child's exit status says which failed */
static void test_fork(chargen_pool *p) {
    pid_t pid;
    int status = -1;
    reset(&rec, 0);
    chargen_pool_run(p, 0, 64, record, &rec); /* the workers have started */
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int ok, code = 0;
        chargen_pool *fresh;
        alarm(30); /* a hang kills the child: the parent sees a signal */
        if (chargen_pool_usable(p)) code |= 1;
        reset(&rec, 0);
        chargen_pool_run(p, 0, 64, record, &rec);
        if (once_each(&rec, 64, &ok) != 64 || !ok) code |= 2;
        fresh = chargen_pool_new(2);
        if (!chargen_pool_usable(fresh) || !workers_help(fresh, 0)) code |= 4;
        chargen_pool_free(fresh);
        chargen_pool_free(p); /* frees, joins nothing */
        _exit(code);
    }
    check(pid > 0, "fork");
    if (pid > 0) waitpid(pid, &status, 0);
    check(WIFEXITED(status) && (WEXITSTATUS(status) & 1) == 0, "fork: the old pool is not usable in the child");
    check(WIFEXITED(status) && (WEXITSTATUS(status) & 2) == 0, "fork: the old pool runs a loop alone in the child");
    check(WIFEXITED(status) && (WEXITSTATUS(status) & 4) == 0, "fork: a new pool in the child has workers");
    check(chargen_pool_usable(p) && workers_help(p, 0), "fork: the parent keeps its workers");
}
#endif

int main(void) {
    chargen_pool *p4 = chargen_pool_new(4), *never = chargen_pool_new(3);
    check(chargen_pool_cpus() >= 1, "at least one CPU");
    check(chargen_pool_new(1) == NULL && chargen_pool_threads(NULL) == 1 && !chargen_pool_usable(NULL),
          "one thread: no pool");
    check(THREADS == chargen_pool_threaded() && (p4 != NULL) == THREADS, "threads where they are built");
    check(!p4 || chargen_pool_threads(p4) == 4, "a pool of 4 threads says 4");
    test_chunks(NULL, "no pool");
    test_chunks(p4, "4 threads");
    chargen_pool_free(never); /* never started: nothing to join */
#if THREADS
    check(workers_help(p4, 0), "the workers take chunks");
    check(workers_help(p4, 2), "a loop limited to 2 threads gets a worker");
    test_callers(p4);
    test_chunks(p4, "4 threads, after several callers");
    test_idle(p4);
    test_fork(p4);
#endif
    chargen_pool_free(p4);
    printf("test_pool: %d checks, %d failed (threads %d, %d CPUs)\n", checks, failed, chargen_pool_threaded(),
           chargen_pool_cpus());
    return failed != 0;
}
