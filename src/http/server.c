/* The segd HTTP daemon: libmicrohttpd with an internal polling thread
 * routes requests, validates and buffers uploads, and enqueues segmentation
 * jobs; the pool's worker that finishes a job resumes the suspended
 * connection with its response.  This file: start-up and shutdown, the
 * libmicrohttpd callbacks, routing and the request's lifetime; the rest
 * of the server is described in server_impl.h. */
#include "segd/server.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <errno.h>
#include <inttypes.h>
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
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "http/assets.h"
#include "http/auth.h"
#include "http/server_impl.h"

#define CORS_MAX_AGE "600"
#define FLUSH_GRACE_S 2.0 /* at shutdown, for answers resumed but not yet sent */
#define PROBE_MAX_CONNECTIONS 32 /* --probe-port listener */
#define PROBE_CONN_TIMEOUT_S 5
/* The viewer loads nothing from elsewhere and has no inline script or
 * style, so the policy allows only its own files (blob:/data: for the
 * canvases and the CSV download). */
#define VIEWER_CSP                                                                       \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

const segd_route segd_routes[R_NONE] = {
    [R_SEGMENT] = {"/v1/segment", true, "POST, OPTIONS"},
    [R_SERIES] = {"/v1/series", true, "POST, OPTIONS"},
    [R_MODEL] = {"/v1/model", false, "GET, HEAD, OPTIONS"},
    [R_HEALTHZ] = {"/healthz", false, "GET, HEAD, OPTIONS"},
    [R_READYZ] = {"/readyz", false, "GET, HEAD, OPTIONS"},
    [R_METRICS] = {"/metrics", false, "GET, HEAD, OPTIONS"},
    [R_ADMIN_RELOAD] = {"/v1/admin/reload", true, "POST, OPTIONS"},
    [R_V2_SERVER] = {"/v2", false, "GET, HEAD, OPTIONS"},
    [R_V2_LIVE] = {"/v2/health/live", false, "GET, HEAD, OPTIONS"},
    [R_V2_READY] = {"/v2/health/ready", false, "GET, HEAD, OPTIONS"},
    [R_V2_MODEL] = {"/v2/models/{name}", false, "GET, HEAD, OPTIONS"},
    [R_V2_MODEL_READY] = {"/v2/models/{name}/ready", false, "GET, HEAD, OPTIONS"},
    [R_V2_INFER] = {"/v2/models/{name}/infer", true, "POST, OPTIONS"},
    [R_STATIC] = {"static", false, "GET, HEAD, OPTIONS"}, /* path is the metrics label */
};

/* The job side of a POST route that runs on the pool, else NULL. */
static const segd_job_route *job_route(route_id id)
{
    return id == R_SEGMENT    ? &segd_segment_route
           : id == R_SERIES   ? &segd_series_route
           : id == R_V2_INFER ? &segd_oip_route_infer
                              : NULL;
}

static route_id route_lookup(const char *url)
{
    for (int i = 0; i < R_V2_SERVER; i++)
        if (strcmp(url, segd_routes[i].path) == 0)
            return (route_id)i;
    route_id v2 = segd_oip_route(url);
    if (v2 != R_NONE)
        return v2;
    const unsigned char *data;
    size_t len;
    const char *ctype;
    if (segd_assets_find(url, &data, &len, &ctype) == 0)
        return R_STATIC;
    return R_NONE;
}

/* ------------------------------------------------------------------ */
/* Request lifetime                                                    */
/* ------------------------------------------------------------------ */

void segd_request_unref(request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    segd_segment_budget_give(r->srv, r->reserved);
    segd_slot_put(r->srv, r->slot);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->slices);
    free(r->body);
    free(r->oip_png);
    free(r->oip_pixels);
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

/* The request's place in a W3C trace: the client's trace id and flags
 * when its traceparent is valid, else a new trace (sampled: the access log
 * records it); a new span id for segd either way. */
static void new_trace(segd_server *s, request *r, const char *traceparent)
{
    uint64_t n = atomic_fetch_add(&s->next_id, 1);
    uint64_t span = mix64(s->id_seed ^ (n * 0x9e3779b97f4a7c15ull + 1));
    snprintf(r->span_id, sizeof r->span_id, "%016" PRIx64, span ? span : 1);
    if (traceparent && segd_http_traceparent_parse(traceparent, r->trace_id, r->trace_flags) == 0)
        return;
    uint64_t hi = mix64(~s->id_seed + n), lo = mix64(s->id_seed + 3 * n + 7);
    snprintf(r->trace_id, sizeof r->trace_id, "%016" PRIx64 "%016" PRIx64, hi, lo ? lo : 1);
    strcpy(r->trace_flags, "01");
}

/* ------------------------------------------------------------------ */
/* Connection thread: routing                                          */
/* ------------------------------------------------------------------ */

static enum MHD_Result answer_get(request *r)
{
    segd_server *s = r->srv;
    switch (r->route) {
    case R_HEALTHZ:
        return segd_respond_text(r, 200, strdup("{\"status\":\"ok\"}"), "application/json");
    case R_READYZ:
        if (atomic_load(&s->draining))
            return segd_respond_error(r, 503, "draining");
        return segd_respond_text(r, 200, strdup("{\"status\":\"ready\"}"), "application/json");
    case R_MODEL:
        return segd_respond_text(r, 200, segd_slot_info_text(s, r->slot), "application/json");
    case R_METRICS: {
        segd_metrics_gauge_set(s->metrics, SEGD_GAUGE_QUEUE_DEPTH,
                               (long)segd_pool_queue_length(s->pool));
        segd_metrics_gauge_set(s->metrics, SEGD_GAUGE_WORKERS_BUSY, segd_pool_busy(s->pool));
        segd_metrics_counter_set(s->metrics, SEGD_COUNTER_LOG_DROPPED, segd_log_dropped(s->log));
        char *text;
        size_t len;
        if (segd_metrics_render(s->metrics, &text, &len))
            return segd_respond_error(r, 503, "out of memory");
        return segd_respond_send(r, 200, segd_respond_buffer(s, r->id, text, len, SEGD_METRICS_CONTENT_TYPE),
                             len);
    }
    case R_V2_SERVER:
    case R_V2_LIVE:
    case R_V2_READY:
    case R_V2_MODEL:
    case R_V2_MODEL_READY:
        return segd_oip_get(r);
    case R_STATIC: {
        const unsigned char *data;
        size_t len;
        const char *ctype;
        if (segd_assets_find(r->path, &data, &len, &ctype))
            return segd_respond_error(r, 404, "no such route");
        struct MHD_Response *resp = segd_respond_static(s, r->id, data, len, ctype);
        if (resp && (MHD_add_response_header(resp, "Content-Security-Policy", VIEWER_CSP) != MHD_YES ||
                     MHD_add_response_header(resp, "X-Frame-Options", "DENY") != MHD_YES ||
                     MHD_add_response_header(resp, "Referrer-Policy", "no-referrer") != MHD_YES)) {
            MHD_destroy_response(resp);
            resp = NULL;
        }
        return segd_respond_send(r, 200, resp, len);
    }
    default:
        return segd_respond_error(r, 500, "unhandled route");
    }
}

static enum MHD_Result answer_options(request *r)
{
    segd_server *s = r->srv;
    struct MHD_Response *resp = segd_respond_buffer(s, r->id, NULL, 0, NULL);
    if (!resp)
        return segd_respond_send(r, 503, NULL, 0);
    const char *allow = segd_routes[r->route].allow;
    bool ok = MHD_add_response_header(resp, "Allow", allow) == MHD_YES;
    if (s->cfg.cors_origin[0])
        ok = ok && MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow) == MHD_YES &&
             MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                     "Content-Type, Accept, Authorization, X-Request-Id, "
                                     "X-Request-Timeout, traceparent") == MHD_YES &&
             MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE) == MHD_YES;
    if (!ok) {
        MHD_destroy_response(resp);
        return segd_respond_send(r, 503, NULL, 0);
    }
    return segd_respond_send(r, 204, resp, 0);
}

/* POST /v1/admin/reload: reload now, on this connection's thread (the
 * probe listener has its own), and say what is in service. */
static enum MHD_Result answer_reload(request *r)
{
    segd_server *s = r->srv;
    char err[512] = "";
    int rc = segd_server_reload(s, err, sizeof err);
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "reload failed, the model in service stays: %s", err);
        return segd_respond_error(r, rc == -ENOTSUP ? 501 : rc == -ENOMEM ? 503 : 422, msg);
    }
    model_slot *now = segd_slot_get(s);
    json_t *doc = json_pack("{s:b,s:{s:s,s:s}}", "reloaded", 1, "model", "name",
                            segd_model_name(now->model), "sha256", segd_model_sha256(now->model));
    segd_slot_put(s, now);
    char *text = doc ? segd_json_text(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return segd_respond_text(r, 200, text, "application/json");
}

/* Final call of a deferred request: its error, or its route's answer. */
static enum MHD_Result answer_deferred(request *r)
{
    if (r->pend_status)
        return segd_respond_error(r, r->pend_status, r->pend_msg);
    if (strcmp(r->method, MHD_HTTP_METHOD_OPTIONS) == 0)
        return answer_options(r);
    if (r->route == R_ADMIN_RELOAD)
        return answer_reload(r);
    return answer_get(r);
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
    r->slot = segd_slot_get(s); /* the request runs on the model in service now */
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url); /* decoded, without the query */
    r->route = r->uri_nul_path ? R_NONE : route_lookup(url);
    segd_guard_phase(s, c, CP_BUSY); /* headers complete */

    char msg[256];
    bool fatal, bad_headers;
    unsigned status = segd_head_check(r, method, version, msg, sizeof msg, &fatal, &bad_headers);
    const char *rid = bad_headers ? NULL
                                  : MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && segd_http_request_id_valid(rid))
        strcpy(r->id, rid);
    else
        new_request_id(s, r->id, sizeof r->id);
    new_trace(s, r, bad_headers ? NULL
                                : MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent"));
    if (status && fatal)
        return segd_respond_error(r, status, msg);
    if (status)
        return segd_respond_reject(r, status, msg);
    if (!r->uri_end) /* the URI log callback ran out of memory */
        return segd_respond_reject(r, 503, "out of memory");

    /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request
     * without Host */
    if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
        !MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST))
        return segd_respond_reject(r, 400, "HTTP/1.1 request without a Host header");
    if (probe && r->route != R_HEALTHZ && r->route != R_READYZ && r->route != R_METRICS) {
        r->route = R_NONE;
        return segd_respond_reject(r, 404, "the probe port serves /healthz, /readyz and /metrics only");
    }
    if (r->route == R_NONE)
        return segd_respond_reject(r, 404, "no such route");
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
        return segd_respond_reject(r, 0, "");
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                  strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (segd_routes[r->route].post ? !is_post : !is_get)
        return segd_respond_reject(r, 405, "method not allowed");
    /* API keys guard the inference routes (POST); probes, metrics, the
     * model document, the viewer and preflights stay open */
    if (s->cfg.api_key_file[0] && segd_routes[r->route].post) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION);
        pthread_mutex_lock(&s->model_lock); /* a reload may swap the keys */
        bool ok = segd_auth_check(s->keys, auth);
        pthread_mutex_unlock(&s->model_lock);
        if (!ok)
            return segd_respond_reject(r, 401, auth ? "invalid API key"
                                                    : "Authorization: Bearer <API key> required");
    }
    const segd_job_route *jr = job_route(r->route);
    if (jr)
        return segd_job_begin(r, jr);
    if (r->route == R_ADMIN_RELOAD)
        return segd_respond_reject(r, 0, ""); /* reloaded once the request is read */
    return segd_respond_reject(r, 0, ""); /* GET, HEAD: answered in the final call */
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
                return segd_respond_abort(r, r->pend_status ? r->pend_status : 413,
                                        r->pend_status ? r->pend_msg : msg);
            }
            return MHD_YES;
        }
        segd_guard_phase(s, c, CP_BUSY); /* request complete */
        return answer_deferred(r);
    case ST_BODY:
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return segd_segment_body(r, upload_data, n);
        }
        segd_guard_phase(s, c, CP_BUSY); /* body complete */
        return segd_job_end(r, job_route(r->route));
    case ST_DONE: {
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return segd_respond_send(r, r->status, resp, r->resp_bytes);
    }
    case ST_QUEUED:
        return MHD_NO; /* resumed without a response: close */
    case ST_ABORTED: /* answered on the socket: drop the rest, bounded */
        r->discarded += *upload_data_size;
        if (*upload_data_size == 0 || r->discarded > s->cfg.max_body)
            return MHD_NO; /* request complete (nothing to queue) or a client that ignores the answer */
        *upload_data_size = 0;
        return MHD_YES;
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
/* Completion and libmicrohttpd's messages                             */
/* ------------------------------------------------------------------ */

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
        segd_metrics_count_request(s->metrics, segd_respond_route_label(r), (int)r->status);
    else if (r->status)
        segd_metrics_inc(s->metrics, SEGD_COUNTER_UNDELIVERED);
    if (s->cfg.access_log)
        segd_respond_access_log(s, r, toe);
    if (r->job_accepted)
        atomic_fetch_sub(&s->jobs_active, 1);
    segd_request_unref(r);
    segd_guard_phase(s, c, CP_HEADERS); /* keep-alive: the next request's headers */
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

/* The locks and the sweeper's condition variable: 0, or -ENOMEM with
 * none of them left initialised. */
static int init_locks(segd_server *s, char *err, size_t errlen)
{
    if (pthread_mutex_init(&s->lock, NULL)) {
        snprintf(err, errlen, "cannot create a mutex");
        return -ENOMEM;
    }
    if (pthread_mutex_init(&s->conn_lock, NULL)) {
        pthread_mutex_destroy(&s->lock);
        snprintf(err, errlen, "cannot create a mutex");
        return -ENOMEM;
    }
    if (pthread_cond_init(&s->sweep_cond, NULL)) {
        pthread_mutex_destroy(&s->conn_lock);
        pthread_mutex_destroy(&s->lock);
        snprintf(err, errlen, "cannot create a condition variable");
        return -ENOMEM;
    }
    if (pthread_mutex_init(&s->model_lock, NULL) || pthread_mutex_init(&s->reload_lock, NULL)) {
        /* (mutex init cannot fail on Linux/glibc with default attributes) */
        pthread_cond_destroy(&s->sweep_cond);
        pthread_mutex_destroy(&s->conn_lock);
        pthread_mutex_destroy(&s->lock);
        snprintf(err, errlen, "cannot create a mutex");
        return -ENOMEM;
    }
    return 0;
}

/* --bind with port into ss; *flags gets MHD_USE_IPv6 for an IPv6 literal.
 * 0 or -EINVAL. */
static int bind_address(const segd_config *cfg, struct sockaddr_storage *ss, unsigned *flags,
                        char *err, size_t errlen)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, cfg->bind, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->bind, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        *flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--bind '%s' is not an IPv4 or IPv6 address", cfg->bind);
        return -EINVAL;
    }
    return 0;
}

/* The whole of a small text file (a PEM) into a new NUL-terminated buffer.
 * 0 or -errno; -EINVAL for a file over 1 MiB or holding a NUL. */
static int read_pem(const char *path, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
    } else {
        n = fread(buf, 1, cap + 1, f);
        if (ferror(f))
            rc = -EIO;
        else if (n > cap || memchr(buf, '\0', n))
            rc = -EINVAL;
    }
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* --tls-cert and --tls-key: both or neither; read here so that a missing
 * file stops the start with its name.  0 or a negative errno. */
static int load_tls(segd_server *s, char *err, size_t errlen)
{
    const segd_config *cfg = &s->cfg;
    if (!cfg->tls_cert[0] && !cfg->tls_key[0])
        return 0;
    if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -EINVAL;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errlen, "this libmicrohttpd was built without TLS (GnuTLS)");
        return -ENOTSUP;
    }
    int rc = read_pem(cfg->tls_cert, &s->tls_cert);
    if (rc) {
        snprintf(err, errlen, "--tls-cert %s: %s", cfg->tls_cert, strerror(-rc));
        return rc;
    }
    rc = read_pem(cfg->tls_key, &s->tls_key);
    if (rc) {
        snprintf(err, errlen, "--tls-key %s: %s", cfg->tls_key, strerror(-rc));
        return rc;
    }
    return 0;
}

/* Free the PEM buffers, the key's bytes wiped first. */
static void free_tls(segd_server *s)
{
    if (s->tls_key)
        memset(s->tls_key, 0, strlen(s->tls_key));
    free(s->tls_key);
    free(s->tls_cert);
    s->tls_key = s->tls_cert = NULL;
}

/* errno of a failed MHD_start_daemon() as segd_server_create's error. */
static int listen_error(const segd_config *cfg, const char *what, int port, char *err,
                        size_t errlen)
{
    int e = errno;
    snprintf(err, errlen, "cannot listen on %s %s %d: %s", cfg->bind, what, port,
             e == EADDRINUSE ? "address in use" : e ? strerror(e) : "not permitted");
    return e == EADDRINUSE ? -EADDRINUSE : -EACCES;
}

/* Start the main listener and, with --probe-port, the probe listener;
 * s->port and s->probe_port get the bound ports. */
static int start_listeners(segd_server *s, char *err, size_t errlen)
{
    const segd_config *cfg = &s->cfg;
    struct sockaddr_storage ss;
    /* MHD_USE_ITC: needed by MHD_quiesce_daemon() at exit */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC;
    int rc = bind_address(cfg, &ss, &flags, err, errlen);
    if (rc)
        return rc;
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
    /* TLS on the main listener only (libmicrohttpd over GnuTLS); the
     * probe listener stays plain HTTP for the kubelet and balancers */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert},
        {MHD_OPTION_END, 0, NULL},
    };
    if (!s->tls_key)
        tls[0].option = MHD_OPTION_END;
    errno = 0;
    s->mhd = MHD_start_daemon(
        flags | (s->tls_key ? MHD_USE_TLS : 0), (uint16_t)cfg->port, NULL, NULL, on_request, s,
        MHD_OPTION_ARRAY, tls,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, segd_guard_on_connection, s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SEGD_HTTP_CONN_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_DISCIPLINE_OPTION
        cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
        (unsigned)cfg->http_threads,
        MHD_OPTION_END);
    if (!s->mhd)
        return listen_error(cfg, "port", cfg->port, err, errlen);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (cfg->probe_port < 0)
        return 0;
    /* Probes get a listener of their own, with its own slots, so that
     * clients holding every slot of the main port cannot make the
     * liveness probe fail and restart a healthy pod.  Its requests are
     * answered on the same thread, never queued. */
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)cfg->probe_port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)cfg->probe_port);
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
    if (!s->probe_mhd)
        return listen_error(cfg, "probe port", cfg->probe_port, err, errlen);
    di = MHD_get_daemon_info(s->probe_mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->probe_port = di ? di->port : cfg->probe_port;
    return 0;
}

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
    s->metrics = metrics;
    s->log = log;
    s->probe_port = -1;
    atomic_init(&s->body_reserved, 0);
    atomic_init(&s->series_reserved, 0);
    atomic_init(&s->aborting, false);
    atomic_init(&s->draining, false);
    atomic_init(&s->jobs_active, 0);
    atomic_init(&s->next_id, 0);
    if (getrandom(&s->id_seed, sizeof s->id_seed, GRND_NONBLOCK) != (ssize_t)sizeof s->id_seed)
        s->id_seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (init_locks(s, err, errlen))
        goto fail;
    lock_init = true;

    s->oom_resp = MHD_create_response_from_buffer(sizeof OOM_BODY - 1, (void *)OOM_BODY,
                                                  MHD_RESPMEM_PERSISTENT);
    if (!s->oom_resp || MHD_add_response_header(s->oom_resp, "Content-Type", "application/json") != MHD_YES ||
        MHD_add_response_header(s->oom_resp, "Retry-After", RETRY_AFTER_S) != MHD_YES) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    if ((rc = segd_slot_init(s, model, err, errlen)))
        goto fail;

    if (cfg->api_key_file[0] && (rc = segd_auth_load(cfg->api_key_file, &s->keys, err, errlen)))
        goto fail;
    if ((rc = load_tls(s, err, errlen)))
        goto fail;

    segd_pool_config pc = {cfg->workers, cfg->worker_threads, cfg->batch,
                           (size_t)cfg->queue_depth, cfg->max_pixels};
    rc = segd_pool_create(model, &pc, segd_segment_run, segd_segment_expire, s, &s->pool, err,
                          errlen);
    if (rc)
        goto fail;
    segd_slot_ref(s, s->slot, cfg->workers); /* each worker's arena is made for it */
    segd_metrics_gauge_set(metrics, SEGD_GAUGE_WORKERS, cfg->workers);

    if ((rc = start_listeners(s, err, errlen)))
        goto fail;
    if (pthread_create(&s->sweeper, NULL, segd_guard_sweeper, s)) {
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
    segd_auth_free(s->keys);
    free_tls(s);
    segd_slots_free(s);
    if (s->oom_resp)
        MHD_destroy_response(s->oom_resp);
    if (lock_init) {
        pthread_mutex_destroy(&s->reload_lock);
        pthread_mutex_destroy(&s->model_lock);
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
    segd_auth_free(s->keys);
    free_tls(s);
    segd_slots_free(s); /* no request and no worker holds one any more */
    MHD_destroy_response(s->oom_resp);
    pthread_mutex_destroy(&s->reload_lock);
    pthread_mutex_destroy(&s->model_lock);
    pthread_cond_destroy(&s->sweep_cond);
    pthread_mutex_destroy(&s->conn_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
