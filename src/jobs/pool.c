/* Worker pool: one thread per segd_worker popping the shared bounded queue,
 * plus one reaper thread that expires jobs whose deadline passes while they
 * wait, so that a 504 goes out at the deadline rather than when a worker
 * frees up. */
#include "jobs/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/queue.h"

typedef struct worker_thread {
    segd_pool *pool;
    segd_worker *worker;
    pthread_t thread;
    bool started;
} worker_thread;

struct segd_pool {
    segd_queue *queue;
    segd_pool_run_fn run;
    segd_pool_expire_fn expire;
    void *arg;
    int nworkers;
    atomic_int busy;
    worker_thread *threads; /* nworkers */
    pthread_t reaper;
    bool reaper_started;
};

static void *worker_main(void *p)
{
    worker_thread *t = p;
    segd_pool *pool = t->pool;
    void *job;
    double deadline;
    while (segd_queue_pop(pool->queue, &job, &deadline) == 0) {
        /* the reaper may not have caught it yet */
        if (segd_queue_now() >= deadline) {
            pool->expire(job, -ETIMEDOUT, pool->arg);
            continue;
        }
        atomic_fetch_add(&pool->busy, 1);
        pool->run(job, &t->worker, pool->arg);
        atomic_fetch_sub(&pool->busy, 1);
    }
    return NULL;
}

static void *reaper_main(void *p)
{
    segd_pool *pool = p;
    void *job;
    while (segd_queue_pop_expired(pool->queue, &job) == 0)
        pool->expire(job, -ETIMEDOUT, pool->arg);
    return NULL;
}

/* Stop and join whatever was started.  Idempotent. */
static void pool_stop(segd_pool *p)
{
    if (p->queue)
        segd_queue_close(p->queue);
    if (p->reaper_started)
        pthread_join(p->reaper, NULL);
    p->reaper_started = false;
    for (int i = 0; p->threads && i < p->nworkers; i++)
        if (p->threads[i].started) {
            pthread_join(p->threads[i].thread, NULL);
            p->threads[i].started = false;
        }
}

/* Stop, then free everything. */
static void pool_destroy(segd_pool *p)
{
    pool_stop(p);
    for (int i = 0; p->threads && i < p->nworkers; i++)
        segd_worker_free(p->threads[i].worker);
    free(p->threads);
    segd_queue_free(p->queue);
    free(p);
}

int segd_pool_create(const segd_model *m, const segd_pool_config *cfg,
                     segd_pool_run_fn run, segd_pool_expire_fn expire, void *arg,
                     segd_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->workers < 1 || cfg->worker_threads < 1 ||
        cfg->queue_depth < 1 || !run || !expire) {
        snprintf(err, errlen, "invalid pool configuration");
        return -EINVAL;
    }
    int rc = -ENOMEM;
    segd_pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    p->run = run;
    p->expire = expire;
    p->arg = arg;
    p->nworkers = cfg->workers;
    atomic_init(&p->busy, 0);
    p->threads = calloc((size_t)cfg->workers, sizeof *p->threads);
    if (!p->threads) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rc = segd_queue_create(cfg->queue_depth, &p->queue);
    if (rc) {
        snprintf(err, errlen, "cannot create the job queue: %s", strerror(-rc));
        goto fail;
    }
    for (int i = 0; i < cfg->workers; i++) {
        p->threads[i].pool = p;
        rc = segd_worker_create_batch(m, cfg->max_pixels, cfg->worker_threads, cfg->batch,
                                      &p->threads[i].worker);
        if (rc) {
            snprintf(err, errlen,
                     "cannot create worker %d (max %zu pixels, %d threads, batch %d): %s", i,
                     cfg->max_pixels, cfg->worker_threads, cfg->batch, strerror(-rc));
            goto fail;
        }
    }
    for (int i = 0; i < cfg->workers; i++) {
        rc = -pthread_create(&p->threads[i].thread, NULL, worker_main, &p->threads[i]);
        if (rc) {
            snprintf(err, errlen, "cannot start worker thread: %s", strerror(-rc));
            goto fail;
        }
        p->threads[i].started = true;
    }
    rc = -pthread_create(&p->reaper, NULL, reaper_main, p);
    if (rc) {
        snprintf(err, errlen, "cannot start the reaper thread: %s", strerror(-rc));
        goto fail;
    }
    p->reaper_started = true;
    *out = p;
    return 0;

fail:
    pool_destroy(p);
    return rc;
}

int segd_pool_submit(segd_pool *p, void *job, double deadline)
{
    return segd_queue_push(p->queue, job, deadline);
}

void segd_pool_close(segd_pool *p) { segd_queue_close(p->queue); }

int segd_pool_cancel(segd_pool *p, void *job, int reason)
{
    int rc = segd_queue_remove(p->queue, job);
    if (rc == 0)
        p->expire(job, reason, p->arg);
    return rc;
}

size_t segd_pool_cancel_queued(segd_pool *p)
{
    size_t n = 0;
    void *job;
    double deadline;
    while (segd_queue_try_pop(p->queue, &job, &deadline) == 0) {
        p->expire(job, -ECANCELED, p->arg);
        n++;
    }
    return n;
}

size_t segd_pool_queue_length(segd_pool *p) { return segd_queue_length(p->queue); }
int segd_pool_busy(segd_pool *p) { return atomic_load(&p->busy); }
int segd_pool_workers(const segd_pool *p) { return p->nworkers; }

void segd_pool_join(segd_pool *p) { pool_stop(p); }

void segd_pool_free(segd_pool *p)
{
    if (p)
        pool_destroy(p);
}
