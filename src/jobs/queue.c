/* Bounded FIFO of (job, deadline) pairs on a ring buffer with one mutex and
 * two condition variables: "not empty" for the workers, "queue changed" for
 * the deadline reaper. */
#include "jobs/queue.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

typedef struct slot {
    void *job;
    double deadline;
} slot;

struct segd_queue {
    pthread_mutex_t lock;
    pthread_cond_t nonempty; /* workers */
    pthread_cond_t changed;  /* reaper: push, pop or close */
    size_t cap, head, len;   /* ring: slots[head .. head+len) mod cap */
    bool closed;
    slot *slots;
};

double segd_queue_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int segd_queue_create(size_t capacity, segd_queue **out)
{
    *out = NULL;
    if (capacity < 1)
        return -EINVAL;
    int rc = -ENOMEM;
    pthread_condattr_t ca;
    bool ca_init = false, lock_init = false, ne_init = false;
    segd_queue *q = calloc(1, sizeof *q);
    if (!q)
        goto fail;
    q->slots = calloc(capacity, sizeof *q->slots);
    if (!q->slots)
        goto fail;
    q->cap = capacity;
    if (pthread_mutex_init(&q->lock, NULL))
        goto fail;
    lock_init = true;
    if (pthread_condattr_init(&ca))
        goto fail;
    ca_init = true;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&q->nonempty, &ca))
        goto fail;
    ne_init = true;
    if (pthread_cond_init(&q->changed, &ca))
        goto fail;
    pthread_condattr_destroy(&ca);
    *out = q;
    return 0;

fail:
    if (ne_init)
        pthread_cond_destroy(&q->nonempty);
    if (ca_init)
        pthread_condattr_destroy(&ca);
    if (lock_init)
        pthread_mutex_destroy(&q->lock);
    if (q)
        free(q->slots);
    free(q);
    return rc;
}

void segd_queue_free(segd_queue *q)
{
    if (!q)
        return;
    pthread_cond_destroy(&q->changed);
    pthread_cond_destroy(&q->nonempty);
    pthread_mutex_destroy(&q->lock);
    free(q->slots);
    free(q);
}

int segd_queue_push(segd_queue *q, void *job, double deadline)
{
    assert(job);
    int rc = 0;
    pthread_mutex_lock(&q->lock);
    if (q->closed) {
        rc = -ESHUTDOWN;
    } else if (q->len == q->cap) {
        rc = -EAGAIN;
    } else {
        q->slots[(q->head + q->len) % q->cap] = (slot){job, deadline};
        q->len++;
        pthread_cond_signal(&q->nonempty);
        /* the reaper re-reads the earliest deadline: this one may be it */
        pthread_cond_signal(&q->changed);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

/* Caller holds the lock and len > 0. */
static void take_head(segd_queue *q, void **job, double *deadline)
{
    assert(q->len > 0);
    slot s = q->slots[q->head];
    q->slots[q->head].job = NULL;
    q->head = (q->head + 1) % q->cap;
    q->len--;
    *job = s.job;
    if (deadline)
        *deadline = s.deadline;
    pthread_cond_signal(&q->changed);
}

int segd_queue_pop(segd_queue *q, void **job, double *deadline)
{
    int rc = 0;
    pthread_mutex_lock(&q->lock);
    while (q->len == 0 && !q->closed)
        pthread_cond_wait(&q->nonempty, &q->lock);
    if (q->len > 0)
        take_head(q, job, deadline);
    else
        rc = -ESHUTDOWN;
    pthread_mutex_unlock(&q->lock);
    return rc;
}

/* Caller holds the lock and i < len: take the i-th queued job out and
 * close the gap, the later jobs moving one slot forward so FIFO order
 * stays. */
static void take_at(segd_queue *q, size_t i)
{
    assert(i < q->len);
    for (size_t k = i; k + 1 < q->len; k++)
        q->slots[(q->head + k) % q->cap] = q->slots[(q->head + k + 1) % q->cap];
    q->slots[(q->head + q->len - 1) % q->cap].job = NULL;
    q->len--;
    pthread_cond_signal(&q->changed);
}

int segd_queue_remove(segd_queue *q, void *job)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->len; i++) {
        if (q->slots[(q->head + i) % q->cap].job != job)
            continue;
        take_at(q, i);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int segd_queue_try_pop(segd_queue *q, void **job, double *deadline)
{
    int rc = -EAGAIN;
    pthread_mutex_lock(&q->lock);
    if (q->len > 0) {
        take_head(q, job, deadline);
        rc = 0;
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int segd_queue_pop_expired(segd_queue *q, void **job)
{
    int rc;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->closed) {
            rc = -ESHUTDOWN;
            break;
        }
        if (q->len == 0) {
            pthread_cond_wait(&q->changed, &q->lock);
            continue;
        }
        /* Deadlines differ per job (X-Request-Timeout), so the head is not
         * always the first to expire: scan for the earliest; the queue is
         * short (--queue-depth) and this runs once per push, pop or
         * expiry. */
        size_t first = 0;
        for (size_t i = 1; i < q->len; i++)
            if (q->slots[(q->head + i) % q->cap].deadline <
                q->slots[(q->head + first) % q->cap].deadline)
                first = i;
        double deadline = q->slots[(q->head + first) % q->cap].deadline;
        if (segd_queue_now() >= deadline) {
            *job = q->slots[(q->head + first) % q->cap].job;
            take_at(q, first);
            rc = 0;
            break;
        }
        struct timespec ts;
        double whole = floor(deadline);
        ts.tv_sec = (time_t)whole;
        ts.tv_nsec = (long)((deadline - whole) * 1e9);
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_nsec = 999999999L;
        pthread_cond_timedwait(&q->changed, &q->lock, &ts);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void segd_queue_close(segd_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_cond_broadcast(&q->nonempty);
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
}

size_t segd_queue_length(segd_queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t segd_queue_capacity(const segd_queue *q) { return q->cap; }
