/* Worker pool: N threads, each owning one segd_worker (its own activation
 * arena), taking jobs from a bounded segd_queue.  The pool does not know
 * what a job is: it hands each one to the caller's run callback with the
 * thread's worker, or to the expire callback when the job's deadline passed
 * while it waited (then it is never run).  Every job pushed is handed to
 * exactly one of the two callbacks, including at shutdown. */
#ifndef SEGD_POOL_H
#define SEGD_POOL_H

#include <stddef.h>

#include "segd/engine.h"

typedef struct segd_pool segd_pool;

typedef struct segd_pool_config {
    int workers;        /* >= 1 */
    int worker_threads; /* >= 1, threads of each worker's engine team */
    int batch;          /* >= 1, slots of each worker (segd_worker_create_batch) */
    size_t queue_depth; /* >= 1 jobs waiting (running ones not counted) */
    size_t max_pixels;  /* per-worker input limit (arena size) */
} segd_pool_config;

/* Run a job on the thread's worker *w (called on that worker's thread).
 * The callback may replace *w (freeing the old one) with a worker of
 * another model, e.g. after a weights reload; the pool frees whatever *w
 * holds at the end. */
typedef void (*segd_pool_run_fn)(void *job, segd_worker **w, void *arg);
/* A job that is not going to run: reason is -ETIMEDOUT when its deadline
 * passed while it waited (called from the reaper or a worker thread),
 * -ECANCELED from segd_pool_cancel_queued(), or the caller's reason from
 * segd_pool_cancel(). */
typedef void (*segd_pool_expire_fn)(void *job, int reason, void *arg);

/* Create the workers (arenas allocated and touched here) and start the
 * threads plus the deadline reaper.  On error nothing is left running and
 * err says why: -ENOMEM, -EINVAL, or an error of segd_worker_create(). */
int segd_pool_create(const segd_model *m, const segd_pool_config *cfg,
                     segd_pool_run_fn run, segd_pool_expire_fn expire, void *arg,
                     segd_pool **out, char *err, size_t errlen);

/* Enqueue a job with its absolute deadline (segd_queue_now() clock).  Never
 * blocks.  0, -EAGAIN (queue full) or -ESHUTDOWN (pool shutting down); on
 * error the job was not taken. */
int segd_pool_submit(segd_pool *p, void *job, double deadline);

/* Stop accepting jobs; queued ones still run (or expire).  Idempotent,
 * does not block. */
void segd_pool_close(segd_pool *p);

/* After segd_pool_close(): hand every job still queued to the expire
 * callback instead of running it (used when the drain time is up).
 * Returns how many. */
size_t segd_pool_cancel_queued(segd_pool *p);

/* Take one queued job out before a worker takes it and hand it to the
 * expire callback with reason (e.g. -ECONNRESET: its client has gone), on
 * the calling thread.  0, or -ENOENT when the job is not queued (running,
 * finished or expired: the callbacks had or will have it). */
int segd_pool_cancel(segd_pool *p, void *job, int reason);

/* Jobs waiting / being run right now (racy snapshots, for gauges). */
size_t segd_pool_queue_length(segd_pool *p);
int segd_pool_busy(segd_pool *p);
int segd_pool_workers(const segd_pool *p);

/* Close, let every queued and running job finish (or expire), and join
 * the threads.  The pool stays readable (queue length, busy: both 0) until
 * segd_pool_free().  Idempotent. */
void segd_pool_join(segd_pool *p);

/* segd_pool_join(), then free.  NULL is fine. */
void segd_pool_free(segd_pool *p);

#endif
