/*
 * chargen's pool of worker threads for the int8 step's loops: pure C99 with POSIX threads (one
 * thread, no pool, on _WIN32 or with CHARGEN_NO_THREADS), no Python headers, no exit(), no
 * allocation after the workers started.
 *
 * Why not OpenMP: a team of OpenMP threads meets at a barrier after every loop, and on a machine
 * busy with other work a team thread the scheduler had set aside stalled every barrier for a
 * time slice (100k characters of int8 took 22.9 s on two threads against 5.3 s on one, with
 * three busy processes on the 2-core EPYC). Here a loop is cut into chunks that the calling
 * thread and the workers claim one at a time from a shared counter: the caller starts at once
 * and claims chunks too, a worker that has not woken up yet claims nothing, so the caller only
 * ever waits for chunks a worker has already begun (never for a worker to arrive); and a
 * worker spins only briefly (SPIN_NS) after a loop before it sleeps, so idle workers leave the
 * CPU to the rest of the machine.
 *
 *   chargen_pool *p = chargen_pool_new(0);            // one thread per CPU; NULL: one thread
 *   chargen_pool_run(p, 0, chunks, fn, arg);           // fn(arg, c) for every c < chunks, once each
 *   chargen_pool_free(p);
 *
 * Each chunk runs whole on one thread, so a loop whose chunks write disjoint outputs gives the
 * same bits on any number of threads. Several threads may call chargen_pool_run on one pool at
 * once: one of them gets the workers, the others run their loop alone (the same result). A
 * process forked after the workers started runs every loop alone on that pool (its workers are
 * not in the child): make a new pool there (chargen_pool_usable says when).
 */
#ifndef CHARGEN_POOL_H
#define CHARGEN_POOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chargen_pool chargen_pool;

/* One chunk of a loop: chunk in [0, chunks). */
typedef void chargen_pool_fn(void *arg, size_t chunk);

/* A pool for loops on `threads` threads, the caller's included (<= 0: one per CPU this process
 * may run on). NULL (a valid pool: every loop on the caller) where that is one thread, where
 * threads are not built, or when memory runs out. The workers start at the first loop that
 * needs them. */
chargen_pool *chargen_pool_new(int threads);

/* Stops and joins the workers (none may be running a loop). NULL is fine. */
void chargen_pool_free(chargen_pool *p);

/* Threads of a loop on p, the caller's included: 1 for NULL. */
int chargen_pool_threads(const chargen_pool *p);

/* 0 where p is NULL, or in a process forked after p's workers started (then every loop runs on
 * the caller alone): a new pool gets threads again. */
int chargen_pool_usable(const chargen_pool *p);

/* fn(arg, c) for every c in [0, chunks), each once, on at most `threads` threads (<= 0: the
 * pool's), the caller's included; returns when all have returned. chunks above 2^24 run on the
 * caller alone. */
void chargen_pool_run(chargen_pool *p, int threads, size_t chunks, chargen_pool_fn *fn, void *arg);

/* CPUs this process may run on (its affinity mask where the platform has one), at least 1. */
int chargen_pool_cpus(void);

/* 1 where the pool was built with threads, else 0 (every loop on the caller). */
int chargen_pool_threaded(void);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_POOL_H */
