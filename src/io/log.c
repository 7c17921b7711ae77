/* Non-blocking line log: a bounded ring buffer filled by any thread and
 * written to a file descriptor by a thread of its own (see segd/log.h). */
#include "segd/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 100 /* the writer re-checks `stop` this often while blocked */

struct segd_log {
    int fd;
    char *ring;
    size_t cap;
    size_t head, len;          /* under lock: oldest byte, bytes queued */
    bool stop;                 /* under lock */
    bool flush_give_up;        /* under lock: drop what is left */
    pthread_mutex_t lock;
    pthread_cond_t more;       /* signalled when bytes are queued or stop */
    pthread_t writer;
    atomic_ullong dropped;
};

/* Write chunk to fd without ever blocking in write(): poll for room (so
 * that `stop` is seen within POLL_MS), then a non-blocking-sized write.
 * Returns bytes written (0 when the reader has no room yet), or -1 when
 * the descriptor is gone (the chunk is dropped). */
static ssize_t write_some(segd_log *l, const char *p, size_t n)
{
    struct pollfd pfd = {l->fd, POLLOUT, 0};
    int pr = poll(&pfd, 1, POLL_MS);
    if (pr == 0)
        return 0;
    if (pr < 0)
        return errno == EINTR ? 0 : -1;
    if (pfd.revents & (POLLERR | POLLNVAL))
        return -1;
    /* A pipe reports POLLOUT with one page free; a write of up to
     * PIPE_BUF bytes then completes at once. */
    ssize_t w = write(l->fd, p, n > 4096 ? 4096 : n);
    if (w < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    return w;
}

static void *writer_main(void *arg)
{
    segd_log *l = arg;
    char chunk[4096];
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (l->len == 0 && !l->stop)
            pthread_cond_wait(&l->more, &l->lock);
        if (l->len == 0 || l->flush_give_up)
            break; /* stopped and flushed, or the flush time is up */
        /* copy out a contiguous piece so the ring is free while writing */
        size_t n = l->len < sizeof chunk ? l->len : sizeof chunk;
        size_t first = l->cap - l->head < n ? l->cap - l->head : n;
        memcpy(chunk, l->ring + l->head, first);
        memcpy(chunk + first, l->ring, n - first);
        pthread_mutex_unlock(&l->lock);
        ssize_t w = write_some(l, chunk, n);
        pthread_mutex_lock(&l->lock);
        if (w < 0)
            w = (ssize_t)n; /* descriptor gone: drop the piece */
        l->head = (l->head + (size_t)w) % l->cap;
        l->len -= (size_t)w;
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

int segd_log_create(int fd, size_t cap, segd_log **out)
{
    *out = NULL;
    segd_log *l = calloc(1, sizeof *l);
    int rc = -ENOMEM;
    if (!l)
        return -ENOMEM;
    l->fd = fd;
    l->cap = cap ? cap : SEGD_LOG_DEFAULT_CAP;
    l->ring = malloc(l->cap);
    atomic_init(&l->dropped, 0);
    if (!l->ring)
        goto fail_ring;
    if (pthread_mutex_init(&l->lock, NULL))
        goto fail_ring;
    if (pthread_cond_init(&l->more, NULL))
        goto fail_mutex;
    if (pthread_create(&l->writer, NULL, writer_main, l)) {
        rc = -EAGAIN;
        goto fail_cond;
    }
    *out = l;
    return 0;

fail_cond:
    pthread_cond_destroy(&l->more);
fail_mutex:
    pthread_mutex_destroy(&l->lock);
fail_ring:
    free(l->ring);
    free(l);
    return rc;
}

void segd_log_line(segd_log *l, const char *line, size_t n)
{
    bool nl = n == 0 || line[n - 1] != '\n';
    if (!l) {
        fprintf(stderr, "%.*s%s", (int)n, line, nl ? "\n" : "");
        return;
    }
    size_t need = n + nl;
    pthread_mutex_lock(&l->lock);
    if (l->stop || l->cap - l->len < need) {
        pthread_mutex_unlock(&l->lock);
        atomic_fetch_add(&l->dropped, 1);
        return;
    }
    size_t tail = (l->head + l->len) % l->cap;
    for (size_t i = 0; i < n; i++) /* two memcpys at most; lines are short */
        l->ring[(tail + i) % l->cap] = line[i];
    if (nl)
        l->ring[(tail + n) % l->cap] = '\n';
    l->len += need;
    pthread_cond_signal(&l->more);
    pthread_mutex_unlock(&l->lock);
}

void segd_log_printf(segd_log *l, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    segd_log_line(l, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

unsigned long long segd_log_dropped(segd_log *l)
{
    return l ? atomic_load(&l->dropped) : 0;
}

void segd_log_free(segd_log *l, double flush_s)
{
    if (!l)
        return;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_signal(&l->more);
    /* wait (polling: the writer signals nothing back) for the flush */
    while (l->len > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double dt = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9;
        if (dt >= flush_s) {
            l->flush_give_up = true;
            break;
        }
        pthread_mutex_unlock(&l->lock);
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->writer, NULL); /* returns within POLL_MS */
    pthread_cond_destroy(&l->more);
    pthread_mutex_destroy(&l->lock);
    free(l->ring);
    free(l);
}
