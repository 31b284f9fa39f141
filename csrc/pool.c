/* chargen's pool of worker threads: see pool.h for the contract.  Pure C99 with POSIX threads
 * and GCC/clang's __atomic builtins; one thread on _WIN32 or with CHARGEN_NO_THREADS. */
#if !defined(_WIN32) && !defined(CHARGEN_NO_THREADS) && (defined(__GNUC__) || defined(__clang__))
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#define POOL_THREADS 1
#else
#define POOL_THREADS 0
#endif

#include "pool.h"

#include <stdlib.h>

int chargen_pool_threaded(void) { return POOL_THREADS; }

static void run_alone(size_t chunks, chargen_pool_fn *fn, void *arg) {
    size_t c;
    for (c = 0; c < chunks; c++) fn(arg, c);
}

#if !POOL_THREADS
struct chargen_pool {
    int unused;
};
chargen_pool *chargen_pool_new(int threads) {
    (void)threads;
    return NULL;
}
void chargen_pool_free(chargen_pool *p) { (void)p; }
int chargen_pool_threads(const chargen_pool *p) {
    (void)p;
    return 1;
}
int chargen_pool_usable(const chargen_pool *p) {
    (void)p;
    return 0;
}
void chargen_pool_run(chargen_pool *p, int threads, size_t chunks, chargen_pool_fn *fn, void *arg) {
    (void)p, (void)threads;
    run_alone(chunks, fn, arg);
}
int chargen_pool_cpus(void) { return 1; }

#else /* POOL_THREADS */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
/* Neither side ever yields the CPU while it waits (sched_yield handed a busy machine's core to
 * another process for a whole time slice, several ms, where the wait was for microseconds):
 * each spins a bounded time, then sleeps on a condition variable, and the wake-up gives it the
 * CPU back at once. */
#ifndef SPIN_NS
#define SPIN_NS 50000 /* a worker spins this long for the next loop before it sleeps */
#endif
#ifndef WAIT_SPIN_NS
#define WAIT_SPIN_NS 50000 /* the caller spins this long for the chunks a worker runs before it sleeps */
#endif
#define CHUNK_BITS 24      /* claim = (job << CHUNK_BITS) | next chunk; odd jobs: being set up */
#define CHUNK_MASK ((UINT64_C(1) << CHUNK_BITS) - 1)
#define LINE 64

#define LOAD(x, order) __atomic_load_n(&(x), __ATOMIC_##order)
#define STORE(x, v, order) __atomic_store_n(&(x), (v), __ATOMIC_##order)

#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define PAUSE() __asm__ __volatile__("yield")
#else
#define PAUSE() ((void)0)
#endif

typedef struct {
    chargen_pool *pool;
    int index; /* joins loops of more than index + 1 threads */
    pthread_t tid;
} worker_t;

struct chargen_pool {
    /* the claim word and the count of finished chunks, each on its own cache line */
    uint64_t claim;
    char pad0[LINE - sizeof(uint64_t)];
    size_t done;
    char pad1[LINE - sizeof(size_t)];
    /* the loop: written by the caller that holds the pool before it publishes the job, read
     * by the workers (atomically: a late worker may read them while the next loop is set up,
     * and then its claim fails) */
    chargen_pool_fn *fn;
    void *arg;
    size_t chunks;
    int helpers; /* workers that may join this loop */
    int busy;    /* 1 while a caller holds the pool */
    int sleepers;
    int waiting; /* 1 while the caller sleeps until the workers' chunks are done */
    int stop;
    int threads, started, workers;
    unsigned fork_gen; /* fork generation when the workers started */
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* workers sleep here */
    pthread_cond_t finished; /* the caller sleeps here */
    worker_t worker[1]; /* threads - 1 of them */
};

/* ------------------------------------------------------------------ fork */
/* bumped in every child: a pool whose workers started in another generation has none here */
static unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { STORE(fork_gen, LOAD(fork_gen, RELAXED) + 1, RELAXED); }
static void register_fork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

static int forked_away(const chargen_pool *p) {
    return LOAD(p->started, ACQUIRE) && p->fork_gen != LOAD(fork_gen, RELAXED);
}

/* ------------------------------------------------------------------ time */
static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ------------------------------------------------------------------ the chunks */
/* claim and run chunks of job `job` until none is left; returns how many this thread ran (a
 * worker counts each in done as it finishes it, the caller adds its own at the end) */
static size_t work(chargen_pool *p, uint64_t job, int count) {
    size_t ran = 0;
    for (;;) {
        uint64_t c = LOAD(p->claim, ACQUIRE);
        chargen_pool_fn *fn;
        void *arg;
        size_t chunks;
        if (c >> CHUNK_BITS != job) return ran;
        fn = LOAD(p->fn, RELAXED), arg = LOAD(p->arg, RELAXED), chunks = LOAD(p->chunks, RELAXED);
        /* a seqlock's read side: the claim below succeeds only if the claim word is still c, that
         * is, no caller has begun setting up the next job (which it marks in the claim word
         * before it writes the job, with a release fence between): then fn, arg and chunks were
         * job's own */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if ((c & CHUNK_MASK) >= chunks) return ran;
        if (!__atomic_compare_exchange_n(&p->claim, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        fn(arg, (size_t)(c & CHUNK_MASK));
        ran++;
        if (count) { /* the caller's sleep: as the workers', the other way round */
            __atomic_fetch_add(&p->done, 1, __ATOMIC_SEQ_CST);
            if (LOAD(p->waiting, SEQ_CST)) {
                pthread_mutex_lock(&p->lock);
                pthread_cond_signal(&p->finished);
                pthread_mutex_unlock(&p->lock);
            }
        }
    }
}

/* a job a worker has not seen yet, and not one being set up (odd numbers) */
static int fresh(uint64_t c, uint64_t seen) { return c >> CHUNK_BITS != seen && !((c >> CHUNK_BITS) & 1); }

/* a worker: wait for a newer job than `seen` (spinning, then asleep), join it if allowed */
static void *worker_main(void *arg) {
    worker_t *w = arg;
    chargen_pool *p = w->pool;
    uint64_t seen = 0; /* started before the first job, number 2 */
    for (;;) {
        uint64_t c = LOAD(p->claim, ACQUIRE);
        if (!fresh(c, seen) && !LOAD(p->stop, ACQUIRE)) {
            const uint64_t until = now_ns() + SPIN_NS;
            unsigned i;
            for (i = 1;; i++) {
                PAUSE();
                c = LOAD(p->claim, ACQUIRE);
                if (fresh(c, seen) || LOAD(p->stop, ACQUIRE)) break;
                if (i % 32 == 0 && now_ns() > until) { /* sleep: sleepers is counted before the job is
                                                        * looked at again, and the caller reads it after
                                                        * publishing (both sequentially consistent), so
                                                        * either it sees a sleeper and wakes it under the
                                                        * lock or this thread sees the job */
                    pthread_mutex_lock(&p->lock);
                    __atomic_add_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
                    while (!fresh(c = LOAD(p->claim, SEQ_CST), seen) && !LOAD(p->stop, SEQ_CST))
                        pthread_cond_wait(&p->wake, &p->lock);
                    __atomic_sub_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
                    pthread_mutex_unlock(&p->lock);
                    break;
                }
            }
        }
        if (LOAD(p->stop, ACQUIRE)) return NULL;
        seen = c >> CHUNK_BITS;
        if (w->index < LOAD(p->helpers, RELAXED)) work(p, seen, 1);
    }
}

static void start_workers(chargen_pool *p) {
    sigset_t all, old;
    int i;
    /* the workers block every signal: they go to the application's threads */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < p->threads - 1; i++) {
        p->worker[i].pool = p;
        p->worker[i].index = i;
        if (pthread_create(&p->worker[i].tid, NULL, worker_main, &p->worker[i]) != 0) break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->workers = i;
    p->fork_gen = LOAD(fork_gen, RELAXED);
    STORE(p->started, 1, RELEASE);
}

/* ------------------------------------------------------------------ the API */
int chargen_pool_cpus(void) {
    int n = 0;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n < 1) {
        long m = sysconf(_SC_NPROCESSORS_ONLN);
        n = m > 0 ? (int)(m < MAX_THREADS ? m : MAX_THREADS) : 1;
    }
    return n;
}

chargen_pool *chargen_pool_new(int threads) {
    chargen_pool *p;
    if (threads <= 0) threads = chargen_pool_cpus();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) return NULL;
    pthread_once(&fork_once, register_fork);
    p = calloc(1, sizeof *p + (size_t)(threads - 2) * sizeof(worker_t));
    if (!p) return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->finished, NULL) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    p->threads = threads;
    return p;
}

void chargen_pool_free(chargen_pool *p) {
    int i;
    if (!p) return;
    if (forked_away(p)) { /* its workers are not in this process, its lock may never be released */
        free(p);
        return;
    }
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        STORE(p->stop, 1, SEQ_CST);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (i = 0; i < p->workers; i++) pthread_join(p->worker[i].tid, NULL);
    }
    pthread_cond_destroy(&p->finished);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int chargen_pool_threads(const chargen_pool *p) { return p ? p->threads : 1; }

int chargen_pool_usable(const chargen_pool *p) { return p && !forked_away(p); }

void chargen_pool_run(chargen_pool *p, int threads, size_t chunks, chargen_pool_fn *fn, void *arg) {
    int expect = 0, helpers;
    uint64_t job;
    size_t mine;
    if (!p || threads == 1 || chunks <= 1 || chunks > CHUNK_MASK || forked_away(p) ||
        !__atomic_compare_exchange_n(&p->busy, &expect, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        run_alone(chunks, fn, arg); /* alone, or the pool is another caller's now */
        return;
    }
    if (!p->started) start_workers(p);
    helpers = threads <= 0 || threads > p->workers ? p->workers : threads - 1;
    if (helpers == 0) {
        STORE(p->busy, 0, RELEASE);
        run_alone(chunks, fn, arg);
        return;
    }
    /* set the job up (no chunk of the last one is in flight): mark it in the claim word first
     * (an odd job number, no chunk to claim), then write it, then publish it (the next even
     * number, chunk 0) */
    job = (LOAD(p->claim, RELAXED) >> CHUNK_BITS) + 1;
    STORE(p->claim, job << CHUNK_BITS | CHUNK_MASK, RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    STORE(p->fn, fn, RELAXED);
    STORE(p->arg, arg, RELAXED);
    STORE(p->chunks, chunks, RELAXED);
    STORE(p->helpers, helpers, RELAXED);
    STORE(p->done, 0, RELAXED);
    job++;
    STORE(p->claim, job << CHUNK_BITS, SEQ_CST);
    if (LOAD(p->sleepers, SEQ_CST) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    mine = work(p, job, 0);
    /* the chunks the workers claimed: wait for those only */
    if (LOAD(p->done, ACQUIRE) + mine < chunks) {
        const uint64_t until = now_ns() + WAIT_SPIN_NS;
        unsigned i;
        for (i = 1; LOAD(p->done, ACQUIRE) + mine < chunks; i++) {
            PAUSE();
            if (i % 32 == 0 && now_ns() > until) { /* a worker was set aside mid-chunk: sleep */
                pthread_mutex_lock(&p->lock);
                STORE(p->waiting, 1, SEQ_CST);
                while (LOAD(p->done, SEQ_CST) + mine < chunks) pthread_cond_wait(&p->finished, &p->lock);
                STORE(p->waiting, 0, RELAXED);
                pthread_mutex_unlock(&p->lock);
                break;
            }
        }
    }
    STORE(p->busy, 0, RELEASE);
}
#endif /* POOL_THREADS */
