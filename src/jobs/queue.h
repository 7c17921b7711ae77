/* Bounded FIFO of jobs with deadlines, shared by the HTTP threads (which
 * never block on it: a full queue is an immediate -EAGAIN), the worker
 * threads (which block until a job or shutdown) and a reaper (which takes
 * jobs whose deadline passed while they waited).
 *
 * Times are seconds on CLOCK_MONOTONIC (segd_queue_now()).  Every function
 * is thread-safe. */
#ifndef SEGD_QUEUE_H
#define SEGD_QUEUE_H

#include <stddef.h>

typedef struct segd_queue segd_queue;

/* Current CLOCK_MONOTONIC time in seconds.  Cannot fail. */
double segd_queue_now(void);

/* A queue holding at most capacity (>= 1) jobs.  0 or -ENOMEM / -EINVAL. */
int segd_queue_create(size_t capacity, segd_queue **out);
/* Free the queue; jobs still in it are not touched.  NULL is fine.  No
 * thread may be blocked in it. */
void segd_queue_free(segd_queue *q);

/* Append job (not NULL) with its absolute deadline.  Never blocks.
 * 0, -EAGAIN when full (job not taken), -ESHUTDOWN once closed. */
int segd_queue_push(segd_queue *q, void *job, double deadline);

/* Take the oldest job, blocking while the queue is empty and open.
 * 0, or -ESHUTDOWN when closed and empty. */
int segd_queue_pop(segd_queue *q, void **job, double *deadline);

/* Take job out of the queue wherever it is (the others keep their order).
 * 0, or -ENOENT when it is not queued (a worker or the reaper has it). */
int segd_queue_remove(segd_queue *q, void *job);

/* Take the oldest job without blocking.  0, -EAGAIN when empty. */
int segd_queue_try_pop(segd_queue *q, void **job, double *deadline);

/* Block until the earliest deadline among the queued jobs has passed and
 * take that job, wherever it sits (a client's X-Request-Timeout can put a
 * shorter deadline behind a longer one).  0, or -ESHUTDOWN as soon as the
 * queue is closed. */
int segd_queue_pop_expired(segd_queue *q, void **job);

/* Refuse further pushes and wake every waiter; jobs already queued can
 * still be popped.  Idempotent. */
void segd_queue_close(segd_queue *q);

size_t segd_queue_length(segd_queue *q);
size_t segd_queue_capacity(const segd_queue *q);

#endif
