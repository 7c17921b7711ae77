/* The segd HTTP daemon: libmicrohttpd with an internal polling thread
 * routes requests, validates and buffers uploads, and enqueues segmentation
 * jobs; the pool's worker that finishes a job resumes the suspended
 * connection with its response.
 *
 * Ownership of a segment request: the request struct (MHD's con_cls) holds
 * two references while its job is in the pool, one for the connection and
 * one for the job.  MHD's completion callback sets `cancelled` (under
 * s->lock) and drops the first; the worker drops the second after resuming
 * the connection, which it does only while holding s->lock and only when
 * not cancelled, so a vanished connection is never touched. */
#include "segd/server.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "http/assets.h"
#include "http/multipart.h"
#include "http/http.h"
#include "segd/log.h"
#include "jobs/pool.h"
#include "jobs/queue.h"

#define RETRY_AFTER_S "1"
/* The answer when no other can be built (out of memory): made at start-up. */
#define OOM_BODY "{\"error\":{\"code\":\"unavailable\",\"message\":\"out of memory\"}}"
#define CORS_MAX_AGE "600"
#define FLUSH_GRACE_S 2.0 /* at shutdown, for answers resumed but not yet sent */
#define SWEEP_PERIOD_NS 200000000L /* slow-client sweeper tick (0.2 s) */
#define SHORT_HEADER_S 2.0 /* header deadline once 3/4 of the slots are taken */
#define PROBE_MAX_CONNECTIONS 32 /* --probe-port listener */
#define PROBE_CONN_TIMEOUT_S 5
/* The viewer loads nothing from elsewhere and has no inline script or
 * style, so the policy allows only its own files (blob:/data: for the
 * canvases and the CSV download). */
#define VIEWER_CSP                                                                       \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* The NUL-byte checks of the request head rely on how libmicrohttpd up to
 * 0.9.76 lays the head out in its read buffer (parsed in place, line ends
 * zeroed); later versions parse differently and refuse NUL bytes
 * themselves, and have MHD_OPTION_CLIENT_DISCIPLINE_LVL (from 0.9.77),
 * which also refuses a repeated or malformed Content-Length. */
#if MHD_VERSION < 0x00097700
#define HEAD_IN_PLACE 1
#define MHD_DISCIPLINE_OPTION
#else
#define HEAD_IN_PLACE 0
#define MHD_DISCIPLINE_OPTION MHD_OPTION_CLIENT_DISCIPLINE_LVL, (int)1,
#endif

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

/* R_STATIC: a file of the embedded web viewer (src/http/assets.h), looked
 * up after the API routes. */
typedef enum route_id { R_SEGMENT, R_MODEL, R_HEALTHZ, R_READYZ, R_METRICS, R_STATIC, R_NONE } route_id;

static const struct {
    const char *path;
    bool post;          /* POST only, else GET/HEAD */
    const char *allow;  /* Allow header */
} ROUTES[] = {
    [R_SEGMENT] = {"/v1/segment", true, "POST, OPTIONS"},
    [R_MODEL] = {"/v1/model", false, "GET, HEAD, OPTIONS"},
    [R_HEALTHZ] = {"/healthz", false, "GET, HEAD, OPTIONS"},
    [R_READYZ] = {"/readyz", false, "GET, HEAD, OPTIONS"},
    [R_METRICS] = {"/metrics", false, "GET, HEAD, OPTIONS"},
    [R_STATIC] = {"static", false, "GET, HEAD, OPTIONS"}, /* path is the metrics label */
};
#define ROUTE_UNMATCHED "unmatched" /* metrics label of 404s */

static route_id route_lookup(const char *url)
{
    for (int i = 0; i < R_STATIC; i++)
        if (strcmp(url, ROUTES[i].path) == 0)
            return (route_id)i;
    const unsigned char *data;
    size_t len;
    const char *ctype;
    if (segd_assets_find(url, &data, &len, &ctype) == 0)
        return R_STATIC;
    return R_NONE;
}

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

/* Slow clients.  libmicrohttpd's connection timeout is an idle timeout,
 * reset by every byte received, so a client that sends its headers (or its
 * body) a byte at a time would hold a connection for ever (slowloris), and
 * enough of them every connection slot.  Each connection is therefore
 * tracked from its start (its socket_context); a sweeper thread shuts down
 * the socket of one whose request headers are not complete within
 * --connection-timeout of the connection's start or of its previous
 * request's end, or whose body is not complete within --request-timeout of
 * its headers.  shutdown() only: libmicrohttpd sees the end of the stream
 * and closes the connection itself (the fd stays valid until the
 * MHD_CONNECTION_NOTIFY_CLOSED callback, which unlinks the entry under
 * conn_lock before libmicrohttpd closes it). */
typedef enum conn_phase { CP_HEADERS, CP_BODY, CP_BUSY } conn_phase;

typedef struct conn_track {
    struct conn_track *prev, *next; /* segd_server.conns, under conn_lock */
    int fd;
    conn_phase phase;
    double since;                   /* start of the phase */
    bool cut;                       /* shut down already */
} conn_track;

struct segd_server {
    segd_config cfg;
    const segd_model *model;
    segd_metrics *metrics;
    segd_pool *pool;
    struct MHD_Daemon *mhd;
    struct MHD_Daemon *probe_mhd; /* --probe-port listener, or NULL */
    int port, probe_port;
    segd_log *log;             /* borrowed; access log and libmicrohttpd messages */
    atomic_size_t body_reserved; /* bytes reserved by bodies, <= cfg.max_body_total */
    atomic_bool aborting;      /* drain time is up: running jobs stop at a slice boundary */
    char *model_info;          /* GET /v1/model body, built once */
    struct MHD_Response *oom_resp; /* 503 built at start-up: the answer when no other can be built */
    pthread_mutex_t lock;      /* request->cancelled, resume, pool_closed */
    bool pool_closed;          /* under lock: no more submits */
    atomic_bool draining;
    atomic_long jobs_active;
    atomic_uint_fast64_t next_id;
    uint64_t id_seed;
    pthread_mutex_t conn_lock; /* conns, conn_track fields, sweep_stop */
    pthread_cond_t sweep_cond;
    conn_track *conns;
    bool sweep_stop;
    bool sweeper_started;
    pthread_t sweeper;
};

/* Keep-alive: libmicrohttpd 0.9.75 treats any response queued in the
 * first call of the access handler (headers just parsed) as "early": it
 * refuses the rest of the request and closes the connection after the
 * answer, so a pipelined request behind it is never answered.  segd
 * therefore answers in the final call (ST_DEFER: the body, if any, read
 * and dropped), and answers early only when it must not read the body
 * (unknown framing, a Content-Length over --max-body, Expect:
 * 100-continue before an error). */
typedef enum req_state {
    ST_DEFER,    /* answer (r->pend_status, or the route) once the request is read */
    ST_BODY,     /* receiving the body of POST /v1/segment */
    ST_QUEUED,   /* suspended, job in the pool */
    ST_DONE,     /* resumed with r->resp to queue */
    ST_ANSWERED, /* response queued */
} req_state;

typedef struct slice {
    const uint8_t *png;
    size_t len;
    char id[256];       /* from the part's file name, shortened on a UTF-8 boundary */
} slice;

typedef struct request {
    segd_server *srv;
    struct MHD_Connection *conn;
    atomic_int refs;
    bool cancelled;             /* under srv->lock */
    bool job_accepted;          /* counted in srv->jobs_active */
    req_state state;
    route_id route;
    char method[16];
    char path[128];             /* for the access log of unmatched routes */
    char id[SEGD_HTTP_REQUEST_ID_MAX + 1];
    double t_start;
    /* POST /v1/segment parameters */
    bool multipart;
    char boundary[SEGD_MULTIPART_BOUNDARY_MAX + 1];
    float threshold;
    char doc_id[SEGD_HTTP_REQUEST_ID_MAX + 1]; /* ?id=, "" if none */
    uint8_t *body;
    size_t len, cap;
    size_t expected;            /* Content-Length, 0 when chunked */
    size_t received;            /* body bytes received so far (kept or dropped) */
    size_t reserved;            /* bytes taken from srv->body_reserved */
    bool over_budget;           /* --max-body-total reached: body dropped, 503 at its end */
    bool body_oom;              /* body dropped because its buffer could not grow: 503 at its end */
    size_t discarded;           /* body bytes dropped in ST_DEFER */
    bool sent_directly;         /* answered on the socket (abort_with_error) or by libmicrohttpd itself */
    /* request head, as the client sent it */
    bool started;               /* on_request has seen it (uri_log allocates it first) */
    bool uri_nul, uri_nul_path; /* a %00 in the raw target */
    size_t uri_len;             /* raw target length */
    const char *uri_end;        /* end of the raw target in libmicrohttpd's buffer */
    bool has_body, expect_continue;
    unsigned long long content_length; /* 0 when absent (or chunked) */
    unsigned pend_status;       /* ST_DEFER: the error to answer, 0 for the route's answer */
    char pend_msg[256];
    slice *slices;
    size_t nslices;
    double t_enqueue, deadline;
    /* response */
    struct MHD_Response *resp;  /* set by a worker before resuming */
    unsigned status;
    size_t resp_bytes;
} request;

/* Upload memory budget (--max-body-total): reservations are taken before
 * a buffer grows and given back when it is freed, so the bodies held at
 * any moment never exceed the budget. */
static bool budget_take(segd_server *s, size_t n)
{
    size_t cur = atomic_load(&s->body_reserved);
    do {
        if (cur > s->cfg.max_body_total || n > s->cfg.max_body_total - cur)
            return false;
    } while (!atomic_compare_exchange_weak(&s->body_reserved, &cur, cur + n));
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_BODY_BYTES, (long)n);
    return true;
}

static void budget_give(segd_server *s, size_t n)
{
    if (!n)
        return;
    atomic_fetch_sub(&s->body_reserved, n);
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_BODY_BYTES, -(long)n);
}

static void request_unref(request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    budget_give(r->srv, r->reserved);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->slices);
    free(r->body);
    free(r);
}

/* splitmix64: a bijection, so seed + counter gives unique, unguessable-
 * looking ids */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void new_request_id(segd_server *s, char *out, size_t cap)
{
    uint64_t n = atomic_fetch_add(&s->next_id, 1);
    snprintf(out, cap, "%016" PRIx64, mix64(s->id_seed + n));
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

/* Add the headers every answer carries.  Returns resp, or NULL (resp
 * destroyed) on OOM. */
static struct MHD_Response *add_common_headers(segd_server *s, struct MHD_Response *resp,
                                               const char *id, const char *ctype)
{
    bool ok = MHD_add_response_header(resp, "X-Request-Id", id) == MHD_YES &&
              MHD_add_response_header(resp, "Cache-Control", "no-store") == MHD_YES &&
              MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
    if (ctype)
        ok = ok && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) == MHD_YES;
    if (s->cfg.cors_origin[0]) {
        ok = ok &&
             MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_origin) == MHD_YES &&
             MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id") == MHD_YES;
        if (strcmp(s->cfg.cors_origin, "*") != 0)
            ok = ok && MHD_add_response_header(resp, "Vary", "Origin") == MHD_YES;
    }
    if (!ok) {
        MHD_destroy_response(resp);
        return NULL;
    }
    return resp;
}

/* A response over static bytes (not copied, not freed).  NULL on OOM. */
static struct MHD_Response *make_static_response(segd_server *s, const char *id,
                                                 const void *body, size_t len, const char *ctype)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    return resp ? add_common_headers(s, resp, id, ctype) : NULL;
}

/* A response over a malloc'ed body, taken over (freed on failure too);
 * NULL/0 for an empty body.  NULL on OOM. */
static struct MHD_Response *make_response(segd_server *s, const char *id, char *body,
                                          size_t len, const char *ctype)
{
    if (!body)
        return make_static_response(s, id, NULL, 0, ctype);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return NULL;
    }
    return add_common_headers(s, resp, id, ctype);
}

/* JSON error response; extra_name/extra_value an optional extra header
 * (Allow, Retry-After).  NULL on OOM. */
static struct MHD_Response *make_error(segd_server *s, const char *id, int status,
                                       const char *message, const char *extra_name,
                                       const char *extra_value, size_t *bytes)
{
    char *body = segd_http_error_body(segd_http_error_code(status), message);
    if (!body)
        return NULL;
    size_t len = strlen(body);
    struct MHD_Response *resp = make_response(s, id, body, len, "application/json");
    if (resp && extra_name && MHD_add_response_header(resp, extra_name, extra_value) != MHD_YES) {
        MHD_destroy_response(resp);
        return NULL;
    }
    *bytes = len;
    return resp;
}

static const char *route_label(const request *r)
{
    return r->route == R_NONE ? ROUTE_UNMATCHED : ROUTES[r->route].path;
}

/* Queue resp (reference taken over) on the connection thread and count it. */
static enum MHD_Result send_response(request *r, unsigned status, struct MHD_Response *resp,
                                     size_t bytes)
{
    segd_server *s = r->srv;
    enum MHD_Result rc;
    if (!resp) { /* out of memory building it: the 503 made at start-up */
        status = 503;
        bytes = sizeof OOM_BODY - 1;
        rc = MHD_queue_response(r->conn, status, s->oom_resp); /* shared: not destroyed here */
    } else {
        rc = MHD_queue_response(r->conn, status, resp);
        MHD_destroy_response(resp);
    }
    if (rc != MHD_YES)
        return MHD_NO;
    r->state = ST_ANSWERED;
    r->status = status;
    r->resp_bytes = bytes;
    if (r->route == R_SEGMENT)
        segd_metrics_observe(s->metrics, SEGD_HIST_REQUEST, segd_queue_now() - r->t_start);
    return MHD_YES;
}

static enum MHD_Result send_error(request *r, unsigned status, const char *message)
{
    size_t bytes = 0;
    const char *hn = NULL, *hv = NULL;
    if (status == 503 && r->route == R_SEGMENT) {
        hn = "Retry-After";
        hv = RETRY_AFTER_S;
    } else if (status == 405) {
        hn = "Allow";
        hv = ROUTES[r->route].allow;
    }
    struct MHD_Response *resp = make_error(r->srv, r->id, (int)status, message, hn, hv, &bytes);
    return send_response(r, status, resp, bytes);
}

static enum MHD_Result send_text(request *r, unsigned status, char *body, const char *ctype)
{
    if (!body) /* out of memory: the start-up 503 */
        return send_response(r, 503, NULL, 0);
    size_t len = strlen(body);
    return send_response(r, status, make_response(r->srv, r->id, body, len, ctype), len);
}

/* Answer mid-upload and close: libmicrohttpd 0.9.75 cannot queue a
 * response while it reads a body (MHD_queue_response refuses that state),
 * so the error is written to the socket here, on the connection's thread,
 * where nothing else is being written (a 100 Continue, if any, is sent
 * completely before the body is read), and MHD_NO then makes
 * libmicrohttpd close the connection without reading the rest.  Used when
 * a body of unknown length (chunked) crosses --max-body. */
static enum MHD_Result abort_with_error(request *r, unsigned status, const char *message)
{
    segd_server *s = r->srv;
    char *body = segd_http_error_body(segd_http_error_code((int)status), message);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!body || !ci) {
        free(body);
        return MHD_NO;
    }
    size_t blen = strlen(body);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n"
                     "X-Content-Type-Options: nosniff\r\n%s%s%s%s\r\n",
                     status, MHD_get_reason_phrase_for(status), blen, r->id,
                     s->cfg.cors_origin[0] ? "Access-Control-Allow-Origin: " : "",
                     s->cfg.cors_origin,
                     s->cfg.cors_origin[0] ? "\r\nAccess-Control-Expose-Headers: X-Request-Id\r\n" : "",
                     s->cfg.cors_origin[0] && strcmp(s->cfg.cors_origin, "*") != 0 ? "Vary: Origin\r\n" : "");
    if (n > 0 && (size_t)n < sizeof head) {
        struct iovec iov[2] = {{head, (size_t)n}, {body, blen}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        ssize_t w;
        do
            w = sendmsg(ci->connect_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        /* FIN after the answer, so that the client reads it before the
         * close (with unread body bytes) resets the connection */
        shutdown(ci->connect_fd, SHUT_WR);
        if (w == (ssize_t)(n + blen)) {
            r->state = ST_ANSWERED;
            r->status = status;
            r->resp_bytes = blen;
            r->sent_directly = true; /* counted in on_completed */
            if (r->route == R_SEGMENT)
                segd_metrics_observe(s->metrics, SEGD_HIST_REQUEST, segd_queue_now() - r->t_start);
        }
    }
    free(body);
    return MHD_NO;
}

/* ------------------------------------------------------------------ */
/* Workers: run a job, or answer it without running it                 */
/* ------------------------------------------------------------------ */

/* Hand a finished job's response to its connection (any thread). */
static void finish_job(request *r, unsigned status, struct MHD_Response *resp, size_t bytes)
{
    segd_server *s = r->srv;
    pthread_mutex_lock(&s->lock);
    if (!r->cancelled && resp) {
        r->resp = resp;
        r->status = status;
        r->resp_bytes = bytes;
        r->state = ST_DONE;
        resp = NULL;
        MHD_resume_connection(r->conn);
    } else if (!r->cancelled) {
        /* OOM building any response: the connection thread answers the
         * 503 built at start-up (send_response with no response) */
        r->resp = NULL;
        r->status = 503;
        r->state = ST_DONE;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&s->lock);
    if (resp)
        MHD_destroy_response(resp);
    request_unref(r);
}

static void finish_job_error(request *r, unsigned status, const char *message)
{
    size_t bytes = 0;
    const char *hn = status == 503 ? "Retry-After" : NULL;
    struct MHD_Response *resp =
        make_error(r->srv, r->id, (int)status, message, hn, RETRY_AFTER_S, &bytes);
    finish_job(r, status, resp, bytes);
}

static void expire_job(void *job, int reason, void *arg)
{
    request *r = job;
    segd_server *s = arg;
    if (reason == -ETIMEDOUT) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_TIMED_OUT);
        segd_metrics_observe(s->metrics, SEGD_HIST_QUEUE_WAIT, segd_queue_now() - r->t_enqueue);
        char msg[96];
        snprintf(msg, sizeof msg, "request deadline of %g s passed before a worker was free",
                 s->cfg.request_timeout);
        finish_job_error(r, 504, msg);
    } else {
        finish_job_error(r, 503, "server shutting down");
    }
}

static double ms_since(double t0) { return (segd_queue_now() - t0) * 1e3; }

static void run_job(void *job, segd_worker *w, void *arg)
{
    request *r = job;
    segd_server *s = arg;
    /* testing aid: a long job, in steps so that the end of the drain time
     * stops it like a real multi-slice job */
    for (int ms = 0; ms < s->cfg.debug_job_delay_ms && !atomic_load(&s->aborting); ms += 10) {
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    double t_run = segd_queue_now();
    double queue_ms = (t_run - r->t_enqueue) * 1e3;
    segd_metrics_observe(s->metrics, SEGD_HIST_QUEUE_WAIT, queue_ms / 1e3);

    pthread_mutex_lock(&s->lock);
    bool cancelled = r->cancelled;
    pthread_mutex_unlock(&s->lock);
    if (cancelled) { /* nobody to answer: skip the work */
        finish_job(r, 0, NULL, 0);
        return;
    }

    json_t *results = r->multipart ? json_array() : NULL;
    json_t *single = NULL;
    if (r->multipart && !results)
        goto oom;
    for (size_t i = 0; i < r->nslices; i++) {
        segd_result res;
        char err[256] = "";
        if (atomic_load(&s->aborting)) { /* drain time up: answer now, not after every slice */
            json_decref(results);
            finish_job_error(r, 503, "daemon stopping: --drain-timeout ended before this job finished");
            return;
        }
        double t0 = segd_queue_now();
        int rc = segd_worker_segment_png(w, r->slices[i].png, r->slices[i].len, r->threshold,
                                         &res, err, sizeof err);
        segd_metrics_observe(s->metrics, SEGD_HIST_INFERENCE, segd_queue_now() - t0);
        if (rc) {
            json_decref(results);
            char msg[400];
            if (r->multipart)
                snprintf(msg, sizeof msg, "part %zu (%.64s): %.255s", i + 1, r->slices[i].id,
                         err[0] ? err : strerror(-rc));
            else
                snprintf(msg, sizeof msg, "%.255s", err[0] ? err : strerror(-rc));
            finish_job_error(r, (unsigned)segd_http_status_for_errno(rc), msg);
            return;
        }
        double t_enc = segd_queue_now();
        json_t *doc = segd_result_json(s->model, &res, r->slices[i].id);
        if (!doc)
            goto oom;
        json_t *timing = json_object_get(doc, "timing_ms");
        if (!json_is_object(timing)) {
            timing = json_object();
            if (!timing || json_object_set_new(doc, "timing_ms", timing)) {
                json_decref(doc);
                goto oom;
            }
        }
        if (json_object_set_new(timing, "queue", json_real(queue_ms)) ||
            json_object_set_new(timing, "encode", json_real(ms_since(t_enc)))) {
            json_decref(doc);
            goto oom;
        }
        if (r->multipart) {
            if (json_array_append_new(results, doc))
                goto oom;
        } else {
            single = doc;
        }
    }
    json_t *top = single;
    if (r->multipart) {
        top = json_pack("{s:o}", "results", results);
        results = NULL; /* stolen by "o", even on failure */
        if (!top)
            goto oom;
    }
    char *text = segd_json_text(top, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(top);
    single = NULL;
    if (!text)
        goto oom;
    size_t len = strlen(text);
    struct MHD_Response *resp = make_response(s, r->id, text, len, "application/json");
    if (!resp)
        goto oom;
    finish_job(r, 200, resp, len);
    return;

oom:
    json_decref(results);
    json_decref(single);
    finish_job_error(r, 503, "out of memory building the response");
}

/* ------------------------------------------------------------------ */
/* Slow clients: phases of a connection, and the sweeper                */
/* ------------------------------------------------------------------ */

static void conn_phase_set(segd_server *s, struct MHD_Connection *c, conn_phase phase)
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

static void *sweeper_main(void *arg)
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
    }
    pthread_mutex_unlock(&s->conn_lock);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Connection thread: routing and uploads                              */
/* ------------------------------------------------------------------ */

static enum MHD_Result answer_get(request *r)
{
    segd_server *s = r->srv;
    switch (r->route) {
    case R_HEALTHZ:
        return send_text(r, 200, strdup("{\"status\":\"ok\"}"), "application/json");
    case R_READYZ:
        if (atomic_load(&s->draining))
            return send_error(r, 503, "draining");
        return send_text(r, 200, strdup("{\"status\":\"ready\"}"), "application/json");
    case R_MODEL:
        return send_text(r, 200, strdup(s->model_info), "application/json");
    case R_METRICS: {
        segd_metrics_gauge_set(s->metrics, SEGD_GAUGE_QUEUE_DEPTH,
                               (long)segd_pool_queue_length(s->pool));
        segd_metrics_gauge_set(s->metrics, SEGD_GAUGE_WORKERS_BUSY, segd_pool_busy(s->pool));
        segd_metrics_counter_set(s->metrics, SEGD_COUNTER_LOG_DROPPED, segd_log_dropped(s->log));
        char *text;
        size_t len;
        if (segd_metrics_render(s->metrics, &text, &len))
            return send_error(r, 503, "out of memory");
        return send_response(r, 200, make_response(s, r->id, text, len, SEGD_METRICS_CONTENT_TYPE),
                             len);
    }
    case R_STATIC: {
        const unsigned char *data;
        size_t len;
        const char *ctype;
        if (segd_assets_find(r->path, &data, &len, &ctype))
            return send_error(r, 404, "no such route");
        struct MHD_Response *resp = make_static_response(s, r->id, data, len, ctype);
        if (resp && (MHD_add_response_header(resp, "Content-Security-Policy", VIEWER_CSP) != MHD_YES ||
                     MHD_add_response_header(resp, "X-Frame-Options", "DENY") != MHD_YES ||
                     MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") != MHD_YES)) {
            MHD_destroy_response(resp);
            resp = NULL;
        }
        return send_response(r, 200, resp, len);
    }
    default:
        return send_error(r, 500, "unhandled route");
    }
}

static enum MHD_Result answer_options(request *r)
{
    segd_server *s = r->srv;
    struct MHD_Response *resp = make_response(s, r->id, NULL, 0, NULL);
    if (!resp)
        return send_response(r, 503, NULL, 0);
    const char *allow = ROUTES[r->route].allow;
    bool ok = MHD_add_response_header(resp, "Allow", allow) == MHD_YES;
    if (s->cfg.cors_origin[0])
        ok = ok && MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow) == MHD_YES &&
             MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                     "Content-Type, X-Request-Id") == MHD_YES &&
             MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE) == MHD_YES;
    if (!ok) {
        MHD_destroy_response(resp);
        return send_response(r, 503, NULL, 0);
    }
    return send_response(r, 204, resp, 0);
}

/* An error found in the request head: answered once the request is read
 * (ST_DEFER) so that the connection stays open, or at once (and the
 * connection closed) when the client waits for 100 Continue: it has not
 * sent the body, and should not. */
static enum MHD_Result reject(request *r, unsigned status, const char *message)
{
    if (status && r->has_body && r->expect_continue)
        return send_error(r, status, message);
    r->pend_status = status;
    snprintf(r->pend_msg, sizeof r->pend_msg, "%s", message);
    r->state = ST_DEFER;
    if (r->has_body)
        conn_phase_set(r->srv, r->conn, CP_BODY); /* the body deadline applies */
    return MHD_YES;
}

/* Final call of a deferred request: its error, or its route's answer. */
static enum MHD_Result answer_deferred(request *r)
{
    if (r->pend_status)
        return send_error(r, r->pend_status, r->pend_msg);
    if (strcmp(r->method, MHD_HTTP_METHOD_OPTIONS) == 0)
        return answer_options(r);
    return answer_get(r);
}

/* One pass over the request's header lines (all of them, repeats
 * included: lookups return only the first). */
typedef struct head_scan {
    const char *lo, *hi;      /* the header block in libmicrohttpd's read buffer */
    const char *prev_end;     /* end of the previous value, NULL for none */
    bool nul;                 /* a header value was cut at a NUL byte */
    int n_cl, n_te;
    const char *cl;
    char te[512];             /* Transfer-Encoding lines joined with ", " */
    bool te_long, expect_continue;
} head_scan;

/* libmicrohttpd 0.9.75 parses the head in place: each CRLF becomes two
 * NUL bytes and each value is a C string pointing into the buffer, so a
 * value that held a NUL byte ends early and leaves non-NUL bytes between
 * its end and the next name (or the end of the head).  Values outside the
 * block (folded lines, copied) are not checked. */
static void scan_gap(head_scan *h, const char *next, size_t max_gap)
{
    if (h->prev_end && h->prev_end >= h->lo && next <= h->hi && h->prev_end <= next) {
        /* the line end is 1 (LF) or 2 (CRLF) bytes, the blank line after
         * the last header as many again: a longer gap held a NUL too */
        if ((size_t)(next - h->prev_end) > max_gap)
            h->nul = true;
        for (const char *p = h->prev_end; p < next; p++)
            if (*p)
                h->nul = true;
    }
    h->prev_end = NULL;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    head_scan *h = cls;
    (void)kind;
    if (HEAD_IN_PLACE)
        scan_gap(h, key, 2);
    if (value)
        h->prev_end = value + strlen(value);
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        h->n_cl++;
        h->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        size_t used = strlen(h->te);
        int n = snprintf(h->te + used, sizeof h->te - used, "%s%s", h->n_te ? ", " : "",
                         value ? value : "");
        if (n < 0 || (size_t)n >= sizeof h->te - used)
            h->te_long = true;
        h->n_te++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_EXPECT) == 0 && value &&
               strcasecmp(value, "100-continue") == 0) {
        h->expect_continue = true;
    }
    return MHD_YES;
}

/* Checks of the request head before any route.  Returns 0, or a status
 * with msg set and *fatal telling whether the body's framing is unknown
 * or refused (answer at once and close) or the request can be read to
 * its end first. */
static unsigned check_head(request *r, const char *method, const char *version, char *msg,
                           size_t msglen, bool *fatal, bool *bad_headers)
{
    segd_server *s = r->srv;
    struct MHD_Connection *c = r->conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t head_size = ci ? ci->header_size : 0;
    head_scan h = {.lo = method, .hi = method + head_size};
    MHD_get_connection_values(c, MHD_HEADER_KIND, scan_header, &h);
    if (head_size)
        scan_gap(&h, h.hi, 4);
    h.nul = h.nul && HEAD_IN_PLACE;
    *bad_headers = h.nul;
    r->expect_continue = h.expect_continue;

    /* framing: what the body is, or whether it can be read at all */
    *fatal = true;
    bool http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    if (h.n_te) {
        int rc = h.te_long ? -EINVAL : segd_http_transfer_encoding_check(h.te);
        if (rc == -ENOTSUP) {
            snprintf(msg, msglen, "Transfer-Encoding '%.200s' is not supported (only chunked)", h.te);
            return 501;
        }
        if (rc) {
            snprintf(msg, msglen, "malformed Transfer-Encoding '%.200s'", h.te);
            return 400;
        }
        if (http10) {
            snprintf(msg, msglen, "Transfer-Encoding in an HTTP/1.0 request");
            return 400;
        }
        if (h.n_cl) {
            snprintf(msg, msglen, "both Transfer-Encoding and Content-Length");
            return 400;
        }
        r->has_body = true;
    }
    if (h.n_cl > 1) {
        snprintf(msg, msglen, "more than one Content-Length header");
        return 400;
    }
    if (h.n_cl == 1) {
        if (segd_http_content_length_parse(h.cl, &r->content_length)) {
            snprintf(msg, msglen, "invalid Content-Length");
            return 400;
        }
        r->has_body = r->content_length > 0;
        if (r->content_length > s->cfg.max_body) {
            snprintf(msg, msglen, "body of %llu bytes is over the limit of %zu",
                     r->content_length, s->cfg.max_body);
            return 413;
        }
    }

    /* the head itself: the body can still be read past these */
    *fatal = false;
    if (r->uri_len > SEGD_HTTP_URL_MAX) {
        snprintf(msg, msglen, "request target of %zu bytes is over the limit of %d", r->uri_len,
                 SEGD_HTTP_URL_MAX);
        return 414;
    }
    if (head_size > r->uri_len + SEGD_HTTP_HEADERS_MAX) {
        snprintf(msg, msglen, "request header fields of %zu bytes are over the limit of %d",
                 head_size - r->uri_len, SEGD_HTTP_HEADERS_MAX);
        return 431;
    }
    if (h.nul) {
        snprintf(msg, msglen, "NUL byte in a header field");
        return 400;
    }
    /* a literal NUL in the target: it ends one byte before the version */
    if (HEAD_IN_PLACE && r->uri_end && version[0] && r->uri_end + 1 != version) {
        snprintf(msg, msglen, "NUL byte in the request target");
        return 400;
    }
    if (r->uri_nul_path) {
        snprintf(msg, msglen, "no such route");
        return 404;
    }
    if (r->uri_nul) {
        snprintf(msg, msglen, "percent-encoded NUL (%%00) in the query");
        return 400;
    }
    return 0;
}

/* First call of POST /v1/segment: everything that can be checked before
 * the body arrives. */
static enum MHD_Result begin_segment(request *r)
{
    segd_server *s = r->srv;
    struct MHD_Connection *c = r->conn;
    if (atomic_load(&s->draining))
        return send_error(r, 503, "draining: not accepting new jobs");

    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (segd_http_media_type_is(ctype, "image/png")) {
        r->multipart = false;
    } else if (segd_http_media_type_is(ctype, "multipart/form-data")) {
        r->multipart = true;
        if (segd_multipart_boundary(ctype, r->boundary, sizeof r->boundary))
            return reject(r, 400, "multipart/form-data without a valid boundary parameter");
    } else {
        return reject(r, 415, "Content-Type must be image/png or multipart/form-data");
    }

    r->threshold = -1.0f;
    const char *t = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "threshold");
    if (t && segd_threshold_parse(t, &r->threshold))
        return reject(r, 400, "threshold must be a decimal number with 0 < threshold < 1");
    const char *id = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");
    if (id) {
        bool ok = *id && strlen(id) <= SEGD_HTTP_REQUEST_ID_MAX;
        for (const unsigned char *p = (const unsigned char *)id; ok && *p; p++)
            ok = *p >= 0x20 && *p != 0x7f;
        /* checked without allocating: an out-of-memory probe is not a bad id */
        if (!ok || !segd_http_utf8_valid(id, strlen(id)))
            return reject(r, 400, "id must be 1..128 bytes of UTF-8 text");
        strcpy(r->doc_id, id);
    }

    /* Reserve the announced size against --max-body-total now (answered
     * before the upload, connection closed, when it does not fit); the
     * buffer itself grows as bytes arrive, so an announced but unsent body
     * costs nothing. */
    if (r->content_length > 0) {
        if (!budget_take(s, (size_t)r->content_length)) {
            segd_metrics_inc(s->metrics, SEGD_COUNTER_UPLOADS_REFUSED);
            return send_error(r, 503, "upload memory in use (--max-body-total), retry later");
        }
        r->reserved = (size_t)r->content_length;
        r->expected = (size_t)r->content_length;
    }
    r->state = ST_BODY;
    conn_phase_set(s, c, CP_BODY);
    return MHD_YES;
}

/* Append a chunk of the body.  A body of unknown length (chunked) that
 * crosses max_body is refused there and then (413, connection closed):
 * reading the rest would cost the client and the server the whole upload
 * (a Content-Length over the limit is refused before the body). */
static enum MHD_Result body_append(request *r, const char *data, size_t n)
{
    segd_server *s = r->srv;
    r->received += n;
    if (r->received > s->cfg.max_body) {
        char msg[128];
        snprintf(msg, sizeof msg, "body is over the limit of %zu bytes", s->cfg.max_body);
        return abort_with_error(r, 413, msg);
    }
    if (r->over_budget || r->body_oom)
        return MHD_YES; /* dropped; answered 503 at the end of the upload */
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        while (cap < r->len + n)
            cap *= 2;
        if (cap > s->cfg.max_body)
            cap = s->cfg.max_body;
        if (r->expected && cap > r->expected && r->expected >= r->len + n)
            cap = r->expected;
        /* a chunked body reserves as it grows */
        if (cap > r->reserved && !budget_take(s, cap - r->reserved)) {
            free(r->body);
            r->body = NULL;
            r->cap = r->len = 0;
            budget_give(s, r->reserved);
            r->reserved = 0;
            r->over_budget = true;
            return MHD_YES; /* answered 503 at the end of the upload */
        }
        if (cap > r->reserved)
            r->reserved = cap;
        uint8_t *b = realloc(r->body, cap);
        if (!b) { /* read and drop the rest; end_segment answers 503 */
            free(r->body);
            r->body = NULL;
            r->cap = r->len = 0;
            budget_give(s, r->reserved);
            r->reserved = 0;
            r->body_oom = true;
            return MHD_YES;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* Fill r->slices from the body.  0, or an HTTP status with msg set. */
static unsigned collect_slices(request *r, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    if (!r->multipart) {
        r->slices = calloc(1, sizeof *r->slices);
        if (!r->slices) {
            snprintf(msg, msglen, "out of memory");
            return 503;
        }
        r->slices[0].png = r->body;
        r->slices[0].len = r->len;
        strcpy(r->slices[0].id, r->doc_id[0] ? r->doc_id : r->id);
        r->nslices = 1;
        return 0;
    }
    size_t max = (size_t)s->cfg.max_parts, n = 0;
    segd_multipart_part *parts = malloc(max * sizeof *parts);
    r->slices = calloc(max, sizeof *r->slices);
    unsigned status = 0;
    if (!parts || !r->slices) {
        snprintf(msg, msglen, "out of memory");
        status = 503;
        goto out;
    }
    int rc = segd_multipart_parse(r->body, r->len, r->boundary, parts, max, &n);
    if (rc == -E2BIG) {
        snprintf(msg, msglen, "more than %zu multipart parts", max);
        status = 413;
        goto out;
    }
    if (rc) {
        snprintf(msg, msglen, "malformed multipart/form-data body");
        status = 400;
        goto out;
    }
    const char *base = r->doc_id[0] ? r->doc_id : r->id;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(parts[i].name, "file") != 0)
            continue; /* other form fields are ignored */
        slice *sl = &r->slices[r->nslices];
        sl->png = parts[i].data;
        sl->len = parts[i].len;
        segd_http_id_from_filename(parts[i].filename, strlen(parts[i].filename), sl->id,
                                   sizeof sl->id);
        if (!sl->id[0])
            snprintf(sl->id, sizeof sl->id, "%s-%zu", base, r->nslices + 1);
        r->nslices++;
        if (sl->len == 0) {
            snprintf(msg, msglen, "part %zu (%.64s) is empty", r->nslices, sl->id);
            status = 400;
            goto out;
        }
    }
    if (r->nslices == 0) {
        snprintf(msg, msglen, "no part named \"file\" in the multipart body");
        status = 400;
    }
out:
    free(parts);
    return status;
}

/* Last call of POST /v1/segment: whole body in memory; enqueue. */
static enum MHD_Result end_segment(request *r)
{
    segd_server *s = r->srv;
    if (r->over_budget) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_UPLOADS_REFUSED);
        return send_error(r, 503, "upload memory in use (--max-body-total), retry later");
    }
    if (r->body_oom)
        return send_error(r, 503, "out of memory for the request body");
    if (r->len == 0)
        return send_error(r, 400, "empty body");
    char msg[256];
    unsigned status = collect_slices(r, msg, sizeof msg);
    if (status)
        return send_error(r, status, msg);

    /* Refuse what the decoder would refuse anyway without taking a queue
     * slot: not a PNG (400), zero size (422), too many pixels (413). */
    for (size_t i = 0; i < r->nslices; i++) {
        const slice *sl = &r->slices[i];
        unsigned w, h;
        char where[96] = "";
        if (r->multipart)
            snprintf(where, sizeof where, "part %zu (%.64s): ", i + 1, sl->id);
        if (segd_http_png_size(sl->png, sl->len, &w, &h)) {
            snprintf(msg, sizeof msg, "%snot a PNG image", where);
            return send_error(r, 400, msg);
        }
        if (w == 0 || h == 0) {
            snprintf(msg, sizeof msg, "%sPNG has zero size (%ux%u)", where, w, h);
            return send_error(r, 422, msg);
        }
        if ((unsigned long long)w * h > s->cfg.max_pixels) {
            snprintf(msg, sizeof msg, "%simage %ux%u is over the limit of %zu pixels", where, w, h,
                     s->cfg.max_pixels);
            return send_error(r, 413, msg);
        }
    }

    r->t_enqueue = segd_queue_now();
    r->deadline = r->t_start + s->cfg.request_timeout;
    if (r->t_enqueue >= r->deadline) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_TIMED_OUT);
        return send_error(r, 504, "request deadline passed while the body was uploaded");
    }

    /* Submit, then suspend, both under the lock: a worker that finishes
     * (or the reaper that expires) the job at once resumes the connection
     * only under the same lock, so it always finds it suspended; and a
     * refused job needs no suspend/resume round trip. */
    int rc;
    pthread_mutex_lock(&s->lock);
    if (s->pool_closed || atomic_load(&s->draining)) {
        rc = -ESHUTDOWN;
    } else {
        atomic_fetch_add(&r->refs, 1); /* the job's reference */
        r->state = ST_QUEUED;
        rc = segd_pool_submit(s->pool, r, r->deadline);
        if (rc == 0) {
            r->job_accepted = true;
            atomic_fetch_add(&s->jobs_active, 1);
            MHD_suspend_connection(r->conn);
        } else {
            r->state = ST_BODY;
            atomic_fetch_sub(&r->refs, 1);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_ACCEPTED);
        return MHD_YES;
    }
    if (rc == -EAGAIN) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_REJECTED);
        return send_error(r, 503, "queue full, retry later");
    }
    return send_error(r, 503, "draining: not accepting new jobs");
}

/* A request as soon as its request line is read (libmicrohttpd's URI log
 * callback, whose result becomes the request's con_cls): the raw target,
 * before libmicrohttpd decodes it into C strings, is only visible here. */
static request *request_new(segd_server *s, struct MHD_Connection *c)
{
    request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->srv = s;
    r->conn = c;
    r->t_start = segd_queue_now();
    r->state = ST_ANSWERED; /* until a handler says otherwise */
    r->route = R_NONE;
    snprintf(r->method, sizeof r->method, "-");
    new_request_id(s, r->id, sizeof r->id); /* replaced by the client's, if valid */
    return r;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    request *r = request_new(cls, c);
    if (!r)
        return NULL;
    r->uri_len = strlen(uri);
    r->uri_end = uri + r->uri_len;
    int in_path;
    r->uri_nul = segd_http_uri_has_nul(uri, r->uri_len, &in_path);
    r->uri_nul_path = in_path;
    snprintf(r->path, sizeof r->path, "%s", uri);
    return r;
}

/* First call: the head is complete.  Check it, route, and either answer
 * at once (framing errors), start reading a segment body, or defer the
 * answer to the final call (ST_DEFER). */
static enum MHD_Result begin_request(request *r, bool probe, const char *url,
                                     const char *method, const char *version)
{
    segd_server *s = r->srv;
    struct MHD_Connection *c = r->conn;
    r->started = true;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url); /* decoded, without the query */
    r->route = r->uri_nul_path ? R_NONE : route_lookup(url);
    conn_phase_set(s, c, CP_BUSY); /* headers complete */

    char msg[256];
    bool fatal, bad_headers;
    unsigned status = check_head(r, method, version, msg, sizeof msg, &fatal, &bad_headers);
    const char *rid = bad_headers ? NULL
                                  : MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && segd_http_request_id_valid(rid))
        strcpy(r->id, rid);
    else
        new_request_id(s, r->id, sizeof r->id);
    if (status && fatal)
        return send_error(r, status, msg);
    if (status)
        return reject(r, status, msg);
    if (!r->uri_end) /* the URI log callback ran out of memory */
        return reject(r, 503, "out of memory");

    /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request
     * without Host */
    if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
        !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST))
        return reject(r, 400, "HTTP/1.1 request without a Host header");
    if (probe && r->route != R_HEALTHZ && r->route != R_READYZ && r->route != R_METRICS) {
        r->route = R_NONE;
        return reject(r, 404, "the probe port serves /healthz, /readyz and /metrics only");
    }
    if (r->route == R_NONE)
        return reject(r, 404, "no such route");
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
        return reject(r, 0, "");
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                  strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (ROUTES[r->route].post ? !is_post : !is_get)
        return reject(r, 405, "method not allowed");
    if (r->route == R_SEGMENT)
        return begin_segment(r);
    return reject(r, 0, ""); /* GET, HEAD: answered in the final call */
}

/* A request on either listener; probe: it came to --probe-port. */
static enum MHD_Result handle_request(segd_server *s, bool probe, struct MHD_Connection *c,
                                      const char *url, const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    request *r = *con_cls;
    if (r == (void *)&s->oom_resp) { /* answered 503 without request state */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!r) {
        r = request_new(s, c);
        if (!r) { /* no request state: answer the start-up 503, mark the
                   * connection so that later calls (body) are ignored */
            *con_cls = &s->oom_resp;
            return MHD_queue_response(c, 503, s->oom_resp);
        }
        *con_cls = r;
    }
    if (!r->started)
        return begin_request(r, probe, url, method, version);

    switch (r->state) {
    case ST_DEFER:
        if (*upload_data_size) {
            r->discarded += *upload_data_size;
            *upload_data_size = 0;
            if (r->discarded > s->cfg.max_body) { /* chunked: unknown length */
                char msg[128];
                snprintf(msg, sizeof msg, "body is over the limit of %zu bytes", s->cfg.max_body);
                return abort_with_error(r, r->pend_status ? r->pend_status : 413,
                                        r->pend_status ? r->pend_msg : msg);
            }
            return MHD_YES;
        }
        conn_phase_set(s, c, CP_BUSY); /* request complete */
        return answer_deferred(r);
    case ST_BODY:
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return body_append(r, upload_data, n);
        }
        conn_phase_set(s, c, CP_BUSY); /* body complete */
        return end_segment(r);
    case ST_DONE: {
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return send_response(r, r->status, resp, r->resp_bytes);
    }
    case ST_QUEUED:
        return MHD_NO; /* resumed without a response: close */
    case ST_ANSWERED:
    default:
        *upload_data_size = 0; /* a body after an early answer is ignored */
        return MHD_YES;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    return handle_request(cls, false, c, url, method, version, upload_data, upload_data_size,
                          con_cls);
}

static enum MHD_Result on_probe_request(void *cls, struct MHD_Connection *c, const char *url,
                                        const char *method, const char *version,
                                        const char *upload_data, size_t *upload_data_size,
                                        void **con_cls)
{
    return handle_request(cls, true, c, url, method, version, upload_data, upload_data_size,
                          con_cls);
}

/* ------------------------------------------------------------------ */
/* Completion: access log, job accounting, release                      */
/* ------------------------------------------------------------------ */

static void access_log(segd_server *s, const request *r, enum MHD_RequestTerminationCode toe)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40], stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof when, "%s.%03dZ", stamp, (int)(ts.tv_nsec / 1000000));
    char path[sizeof r->path];
    size_t i;
    for (i = 0; r->path[i]; i++) /* keep the line valid UTF-8 */
        path[i] = ((unsigned char)r->path[i] >= 0x20 && (unsigned char)r->path[i] < 0x7f)
                      ? r->path[i] : '?';
    path[i] = '\0';
    char method[sizeof r->method];
    for (i = 0; r->method[i]; i++)
        method[i] = ((unsigned char)r->method[i] >= 0x20 && (unsigned char)r->method[i] < 0x7f)
                        ? r->method[i] : '?';
    method[i] = '\0';
    json_t *line = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:f}", "time", when, "id", r->id,
                             "method", method, "route",
                             r->route == R_NONE || r->route == R_STATIC ? path : ROUTES[r->route].path,
                             "status", (int)r->status, "bytes", (json_int_t)r->resp_bytes,
                             "ms", round(ms_since(r->t_start) * 1000.0) / 1000.0);
    if (line && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        json_object_set_new(line, "aborted", json_true());
    char *text = line ? segd_json_text(line, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(line);
    if (text) {
        size_t n = strlen(text);
        segd_log_line(s->log, text, n); /* never blocks: see segd/log.h */
        free(text);
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    segd_server *s = cls;
    request *r = *con_cls;
    *con_cls = NULL;
    if (!r || r == (void *)&s->oom_resp)
        return;
    pthread_mutex_lock(&s->lock);
    r->cancelled = true;
    pthread_mutex_unlock(&s->lock);
    if (!r->started && r->status == 0) {
        /* answered by libmicrohttpd itself before the head was complete
         * (a head over SEGD_HTTP_CONN_MEMORY, a malformed Content-Length):
         * logged and counted all the same */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        if (ci && ci->http_status >= 100) {
            r->status = ci->http_status;
            r->sent_directly = true;
        }
    }
    /* Count what was delivered: a response queued but cut off (client
     * gone, daemon stopping) is counted apart, as the access log marks
     * it aborted.  An answer written on the socket before a close counts
     * as delivered. */
    if (r->status && (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK || r->sent_directly))
        segd_metrics_count_request(s->metrics, route_label(r), (int)r->status);
    else if (r->status)
        segd_metrics_inc(s->metrics, SEGD_COUNTER_UNDELIVERED);
    if (s->cfg.access_log)
        access_log(s, r, toe);
    if (r->job_accepted)
        atomic_fetch_sub(&s->jobs_active, 1);
    request_unref(r);
    conn_phase_set(s, c, CP_HEADERS); /* keep-alive: the next request's headers */
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
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

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    segd_server *s = cls;
    int saved = errno; /* segd_server_create reads errno after a failed start */
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    segd_log_printf(s->log, "segd: libmicrohttpd: %s", line);
    errno = saved;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                           */
/* ------------------------------------------------------------------ */

int segd_server_create(const segd_config *cfg, const segd_model *model,
                       segd_metrics *metrics, segd_log *log, segd_server **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    int rc = -ENOMEM;
    bool lock_init = false;
    segd_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->cfg = *cfg;
    s->model = model;
    s->metrics = metrics;
    s->log = log;
    s->probe_port = -1;
    atomic_init(&s->body_reserved, 0);
    atomic_init(&s->aborting, false);
    atomic_init(&s->draining, false);
    atomic_init(&s->jobs_active, 0);
    atomic_init(&s->next_id, 0);
    if (getrandom(&s->id_seed, sizeof s->id_seed, GRND_NONBLOCK) != (ssize_t)sizeof s->id_seed)
        s->id_seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (pthread_mutex_init(&s->lock, NULL)) {
        snprintf(err, errlen, "cannot create a mutex");
        goto fail;
    }
    if (pthread_mutex_init(&s->conn_lock, NULL)) {
        pthread_mutex_destroy(&s->lock);
        snprintf(err, errlen, "cannot create a mutex");
        goto fail;
    }
    if (pthread_cond_init(&s->sweep_cond, NULL)) {
        pthread_mutex_destroy(&s->conn_lock);
        pthread_mutex_destroy(&s->lock);
        snprintf(err, errlen, "cannot create a condition variable");
        goto fail;
    }
    lock_init = true;

    s->oom_resp = MHD_create_response_from_buffer(sizeof OOM_BODY - 1, (void *)OOM_BODY,
                                                  MHD_RESPMEM_PERSISTENT);
    if (!s->oom_resp || MHD_add_response_header(s->oom_resp, "Content-Type", "application/json") != MHD_YES ||
        MHD_add_response_header(s->oom_resp, "Retry-After", RETRY_AFTER_S) != MHD_YES) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    json_t *info = segd_model_info_json(model);
    s->model_info = info ? segd_json_text(info, JSON_COMPACT) : NULL;
    json_decref(info);
    if (!s->model_info) {
        snprintf(err, errlen, "cannot build the model info document");
        goto fail;
    }

    segd_pool_config pc = {cfg->workers, cfg->worker_threads,
                           (size_t)cfg->queue_depth, cfg->max_pixels};
    rc = segd_pool_create(model, &pc, run_job, expire_job, s, &s->pool, err, errlen);
    if (rc)
        goto fail;
    segd_metrics_gauge_set(metrics, SEGD_GAUGE_WORKERS, cfg->workers);

    /* listening address */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* MHD_USE_ITC: needed by MHD_quiesce_daemon() at exit */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->bind, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->bind, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--bind '%s' is not an IPv4 or IPv6 address", cfg->bind);
        rc = -EINVAL;
        goto fail;
    }
    /* poll(), not epoll: with libmicrohttpd 0.9.75's edge-triggered epoll a
     * client that closes during its upload is often not noticed, and its
     * connection (with the body buffer) stays until --connection-timeout
     * (tests/hardening/test_disconnect.py).  poll() re-checks every socket
     * each round; at --max-connections in the hundreds that costs nothing
     * next to an inference. */
    if (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES)
        flags |= MHD_USE_POLL;

    /* The logger goes first (MHD reports option errors through it); the
     * thread pool option comes last and turns into MHD_OPTION_END when
     * not wanted, since MHD warns about a pool of one. */
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, and a
     * second daemon on the same port would then start and take half the
     * connections (with other weights, perhaps).  Without it the second
     * bind fails with EADDRINUSE; SO_REUSEADDR (MHD's default) still
     * allows a restart while old connections are in TIME_WAIT. */
    errno = 0;
    s->mhd = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SEGD_HTTP_CONN_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_DISCIPLINE_OPTION
        cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned)cfg->http_threads,
        MHD_OPTION_END);
    if (!s->mhd) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s port %d: %s", cfg->bind, cfg->port,
                 e == EADDRINUSE ? "address in use" : e ? strerror(e) : "not permitted");
        rc = e == EADDRINUSE ? -EADDRINUSE : -EACCES;
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (cfg->probe_port >= 0) {
        /* Probes get a listener of their own, with its own slots, so that
         * clients holding every slot of the main port cannot make the
         * liveness probe fail and restart a healthy pod.  Its requests are
         * answered on the same thread, never queued. */
        if (v4->sin_family == AF_INET)
            v4->sin_port = htons((uint16_t)cfg->probe_port);
        else
            v6->sin6_port = htons((uint16_t)cfg->probe_port);
        errno = 0;
        s->probe_mhd = MHD_start_daemon(
            flags, (uint16_t)cfg->probe_port, NULL, NULL, on_probe_request, s,
            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)PROBE_MAX_CONNECTIONS,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)PROBE_CONN_TIMEOUT_S,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SEGD_HTTP_CONN_MEMORY,
            MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
            MHD_DISCIPLINE_OPTION
            MHD_OPTION_END);
        if (!s->probe_mhd) {
            int e = errno;
            snprintf(err, errlen, "cannot listen on %s probe port %d: %s", cfg->bind,
                     cfg->probe_port,
                     e == EADDRINUSE ? "address in use" : e ? strerror(e) : "not permitted");
            rc = e == EADDRINUSE ? -EADDRINUSE : -EACCES;
            goto fail;
        }
        di = MHD_get_daemon_info(s->probe_mhd, MHD_DAEMON_INFO_BIND_PORT);
        s->probe_port = di ? di->port : cfg->probe_port;
    }
    if (pthread_create(&s->sweeper, NULL, sweeper_main, s)) {
        snprintf(err, errlen, "cannot start the slow-client sweeper thread");
        rc = -EAGAIN;
        goto fail;
    }
    s->sweeper_started = true;
    *out = s;
    return 0;

fail:
    if (s->probe_mhd)
        MHD_stop_daemon(s->probe_mhd);
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    segd_pool_free(s->pool);
    free(s->model_info);
    if (s->oom_resp)
        MHD_destroy_response(s->oom_resp);
    if (lock_init) {
        pthread_cond_destroy(&s->sweep_cond);
        pthread_mutex_destroy(&s->conn_lock);
        pthread_mutex_destroy(&s->lock);
    }
    free(s);
    return rc;
}

int segd_server_port(const segd_server *s) { return s->port; }

int segd_server_probe_port(const segd_server *s) { return s->probe_port; }

void segd_server_drain(segd_server *s) { atomic_store(&s->draining, true); }

long segd_server_jobs_active(segd_server *s) { return atomic_load(&s->jobs_active); }

size_t segd_server_cancel_queued(segd_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->pool_closed = true;
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->aborting, true);
    segd_pool_close(s->pool);
    return segd_pool_cancel_queued(s->pool);
}

/* At exit, after libmicrohttpd stopped accepting: answer the connections
 * still in the listen backlog 503 (draining) and close them cleanly, for
 * up to EXIT_BACKLOG_S, instead of letting close() reset them.  A socket
 * filter that drops every packet is attached first, so no handshake
 * completes in the meantime: a client connecting now retransmits its SYN
 * and then finds the port closed (connection refused). */
#define EXIT_BACKLOG_S 0.25
#define EXIT_LINGER_MS 200 /* per connection, for its request and then its close */
static void answer_backlog(segd_server *s, int lfd)
{
    static const char BODY[] =
        "{\"error\":{\"code\":\"unavailable\",\"message\":\"daemon stopping\"}}";
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                      "Retry-After: " RETRY_AFTER_S "\r\nX-Content-Type-Options: nosniff\r\n"
                      "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                      sizeof BODY - 1, BODY);
    struct sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {1, &drop_all};
    (void)setsockopt(lfd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog); /* best effort */
    double t0 = segd_queue_now();
    while (segd_queue_now() - t0 < EXIT_BACKLOG_S) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) {
            /* nothing waiting: wait a little for libmicrohttpd's own
             * connections to finish, then stop */
            if (segd_metrics_gauge_value(s->metrics, SEGD_GAUGE_CONNECTIONS) <= 0)
                break;
            struct timespec ts = {0, 5000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        /* Read the request first, answer, then linger until the client
         * closes: closing with unread bytes (or bytes still arriving) would
         * send a reset that can discard the answer at the client. */
        char buf[4096];
        struct pollfd pfd = {c, POLLIN, 0};
        if (poll(&pfd, 1, EXIT_LINGER_MS) > 0)
            while (recv(c, buf, sizeof buf, 0) > 0)
                ;
        if (send(c, head, (size_t)hn, MSG_NOSIGNAL) < 0)
            segd_metrics_inc(s->metrics, SEGD_COUNTER_UNDELIVERED);
        else
            segd_metrics_count_request(s->metrics, "draining", 503);
        shutdown(c, SHUT_WR);
        double t_linger = segd_queue_now(); /* bounded: a trickler cannot hold the exit */
        while (segd_queue_now() - t_linger < EXIT_LINGER_MS / 1e3 &&
               poll(&pfd, 1, EXIT_LINGER_MS) > 0) {
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break; /* the client closed (or reset): done */
        }
        close(c);
    }
    close(lfd);
}

void segd_server_free(segd_server *s)
{
    if (!s)
        return;
    atomic_store(&s->draining, true);
    if (s->sweeper_started) {
        pthread_mutex_lock(&s->conn_lock);
        s->sweep_stop = true;
        pthread_cond_signal(&s->sweep_cond);
        pthread_mutex_unlock(&s->conn_lock);
        pthread_join(s->sweeper, NULL);
    }
    /* No handler may submit from here on; the pool then answers every job
     * it holds (queued ones run or expire) and joins its threads, so that
     * no connection is left suspended when libmicrohttpd stops (it
     * refuses to stop with suspended connections). */
    pthread_mutex_lock(&s->lock);
    s->pool_closed = true;
    pthread_mutex_unlock(&s->lock);
    segd_pool_join(s->pool);
    /* Every job has now resumed its connection; give libmicrohttpd a
     * moment to send those answers (it does so on its own thread) before
     * stopping it closes the connections.  Nothing to wait for after a
     * complete drain. */
    double t0 = segd_queue_now();
    while (atomic_load(&s->jobs_active) > 0 && segd_queue_now() - t0 < FLUSH_GRACE_S) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
    if (s->probe_mhd)
        MHD_stop_daemon(s->probe_mhd);
    /* Stop accepting, answer what already waits in the backlog, then stop
     * (MHD_stop_daemon would close the listener with those connections
     * queued, and the kernel resets them). */
    MHD_socket lfd = MHD_quiesce_daemon(s->mhd);
    if (lfd != MHD_INVALID_SOCKET)
        answer_backlog(s, lfd);
    MHD_stop_daemon(s->mhd);
    segd_pool_free(s->pool);
    free(s->model_info);
    MHD_destroy_response(s->oom_resp);
    pthread_cond_destroy(&s->sweep_cond);
    pthread_mutex_destroy(&s->conn_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
