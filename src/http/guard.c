/* Slow and gone clients: every connection is tracked from its start, and a
 * sweeper thread shuts down the socket of one that overruns the deadline
 * of its phase (headers, body), or the oldest idle ones when slots run
 * low, and drops the queued jobs of clients that have hung up. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "http/server_impl.h"

#define SWEEP_PERIOD_NS 200000000L /* slow-client sweeper tick (0.2 s) */
#define SHORT_HEADER_S 2.0 /* header deadline once 3/4 of the slots are taken */

void segd_guard_phase(segd_server *s, struct MHD_Connection *c, conn_phase phase)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = ci ? ci->socket_context : NULL;
    if (!t)
        return; /* untracked (OOM at its start): only the idle timeout applies */
    pthread_mutex_lock(&s->conn_lock);
    t->phase = phase;
    t->since = segd_queue_now();
    pthread_mutex_unlock(&s->conn_lock);
}

/* Queued jobs whose client has hung up (conn_lock held; released and
 * taken again around the cancels).  libmicrohttpd does not watch a
 * suspended connection, so without this a client that gives up keeps its
 * queue slot and a worker computes an answer for nobody.  A peer's FIN
 * (POLLRDHUP) counts as gone: an HTTP client does not half-close while it
 * waits for its answer. */
static void sweep_gone(segd_server *s)
{
    enum { BATCH = 64 };
    struct pollfd pfd[BATCH];
    conn_track *who[BATCH];
    request *gone[BATCH];
    size_t n = 0, ngone = 0;
    for (conn_track *t = s->conns; t && n < BATCH; t = t->next)
        if (t->queued && !t->cut) {
            pfd[n] = (struct pollfd){.fd = t->fd, .events = POLLRDHUP};
            who[n++] = t;
        }
    if (n == 0 || poll(pfd, n, 0) <= 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
            request *r = who[i]->queued;
            who[i]->queued = NULL;
            atomic_fetch_add(&r->refs, 1); /* alive until cancelled below */
            gone[ngone++] = r;
        }
    pthread_mutex_unlock(&s->conn_lock);
    for (size_t i = 0; i < ngone; i++) {
        atomic_store(&gone[i]->client_gone, true);
        /* not queued any more (a worker took it): the worker sees
         * client_gone before it starts, or a series between slices */
        segd_pool_cancel(s->pool, gone[i], -ECONNRESET);
        segd_request_unref(gone[i]);
    }
    pthread_mutex_lock(&s->conn_lock);
}

void *segd_guard_sweeper(void *arg)
{
    segd_server *s = arg;
    pthread_mutex_lock(&s->conn_lock);
    while (!s->sweep_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SWEEP_PERIOD_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->sweep_cond, &s->conn_lock, &ts);
        double now = segd_queue_now();
        size_t live = 0, maxc = s->cfg.max_connections;
        for (conn_track *t = s->conns; t; t = t->next)
            live += !t->cut;
        /* Slots running low: a connection that has sent nothing or only
         * part of its headers gets a short deadline instead of the idle
         * timeout, so idle sockets cannot hold every slot for 30 s. */
        bool low = live * 4 >= maxc * 3;
        for (conn_track *t = s->conns; t; t = t->next) {
            double limit = t->phase == CP_HEADERS ? (double)s->cfg.conn_timeout
                           : t->phase == CP_BODY  ? s->cfg.request_timeout
                                                  : 0.0;
            if (low && t->phase == CP_HEADERS && limit > SHORT_HEADER_S)
                limit = SHORT_HEADER_S;
            if (limit > 0 && !t->cut && now - t->since > limit) {
                shutdown(t->fd, SHUT_RDWR);
                t->cut = true;
                live--;
            }
        }
        /* At the limit: evict the oldest connections waiting for headers
         * so that a slot stays free for a new client (a probe). */
        size_t headroom = maxc / 16 ? maxc / 16 : 1;
        while (live + headroom > maxc) {
            conn_track *oldest = NULL;
            for (conn_track *t = s->conns; t; t = t->next)
                if (!t->cut && t->phase == CP_HEADERS && (!oldest || t->since < oldest->since))
                    oldest = t;
            if (!oldest)
                break; /* every connection is busy with a real request */
            shutdown(oldest->fd, SHUT_RDWR);
            oldest->cut = true;
            live--;
        }
        sweep_gone(s);
    }
    pthread_mutex_unlock(&s->conn_lock);
    return NULL;
}

void segd_guard_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    segd_server *s = cls;
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_CONNECTIONS,
                           toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_track *t = ci ? calloc(1, sizeof *t) : NULL;
        if (!t)
            return; /* untracked: only the idle timeout applies */
        t->fd = ci->connect_fd;
        t->phase = CP_HEADERS;
        t->since = segd_queue_now();
        pthread_mutex_lock(&s->conn_lock);
        t->next = s->conns;
        if (s->conns)
            s->conns->prev = t;
        s->conns = t;
        pthread_mutex_unlock(&s->conn_lock);
        *socket_context = t;
    } else if (*socket_context) {
        conn_track *t = *socket_context;
        pthread_mutex_lock(&s->conn_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            s->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&s->conn_lock);
        free(t);
        *socket_context = NULL;
    }
}
