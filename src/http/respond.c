/* Answers of the HTTP server: the headers every response carries, JSON
 * errors, queueing a response and counting it, the direct answer written
 * on the socket mid-upload, and the access log line of each request. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <jansson.h>

#include "http/server_impl.h"
#ifdef SEGD_HAVE_DICOM
#include "segd/dicom.h"
#endif

/* The answer headers a browser script from another origin may read (CORS
 * exposes only the safelisted ones otherwise): the request id and trace to
 * quote, and Retry-After, which a client needs on exactly the 503s it
 * should retry. */
#define CORS_EXPOSE_HEADERS "X-Request-Id, traceparent, Retry-After"

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
             MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                     CORS_EXPOSE_HEADERS) == MHD_YES;
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
struct MHD_Response *segd_respond_static(segd_server *s, const char *id,
                                                 const void *body, size_t len, const char *ctype)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    return resp ? add_common_headers(s, resp, id, ctype) : NULL;
}

/* A response over a malloc'ed body, taken over (freed on failure too);
 * NULL/0 for an empty body.  NULL on OOM. */
struct MHD_Response *segd_respond_buffer(segd_server *s, const char *id, char *body,
                                          size_t len, const char *ctype)
{
    if (!body)
        return segd_respond_static(s, id, NULL, 0, ctype);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return NULL;
    }
    return add_common_headers(s, resp, id, ctype);
}

#ifdef SEGD_HAVE_DICOM
struct MHD_Response *segd_respond_dicom(segd_server *s, const char *id, void *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(len, body, segd_dicom_buffer_free);
    if (!resp) {
        segd_dicom_buffer_free(body);
        return NULL;
    }
    return add_common_headers(s, resp, id, "application/dicom");
}
#endif

/* JSON error response; extra_name/extra_value an optional extra header
 * (Allow, Retry-After).  NULL on OOM. */
struct MHD_Response *segd_respond_make_error(segd_server *s, const char *id, int status,
                                       const char *message, const char *extra_name,
                                       const char *extra_value, size_t *bytes, bool oip)
{
    char *body = oip ? segd_http_oip_error_body(message)
                     : segd_http_error_body(segd_http_error_code(status), message);
    if (!body)
        return NULL;
    size_t len = strlen(body);
    struct MHD_Response *resp = segd_respond_buffer(s, id, body, len, "application/json");
    if (resp && extra_name && MHD_add_response_header(resp, extra_name, extra_value) != MHD_YES) {
        MHD_destroy_response(resp);
        return NULL;
    }
    *bytes = len;
    return resp;
}

const char *segd_respond_route_label(const request *r)
{
    return r->route == R_NONE ? ROUTE_UNMATCHED : segd_routes[r->route].path;
}

/* The request-duration histogram of the job routes. */
static void observe_duration(const request *r)
{
    if (r->route == R_SEGMENT)
        segd_metrics_observe(r->srv->metrics, SEGD_HIST_REQUEST, segd_queue_now() - r->t_start);
    else if (r->route == R_SERIES)
        segd_metrics_observe(r->srv->metrics, SEGD_HIST_SERIES, segd_queue_now() - r->t_start);
}

/* Queue resp (reference taken over) on the connection thread and count it. */
enum MHD_Result segd_respond_send(request *r, unsigned status, struct MHD_Response *resp,
                                     size_t bytes)
{
    segd_server *s = r->srv;
    enum MHD_Result rc;
    if (!resp) { /* out of memory building it: the 503 made at start-up */
        status = 503;
        bytes = sizeof OOM_BODY - 1;
        rc = MHD_queue_response(r->conn, status, s->oom_resp); /* shared: not destroyed here */
    } else {
        char tp[64];
        snprintf(tp, sizeof tp, "00-%s-%s-%s", r->trace_id, r->span_id, r->trace_flags);
        /* the trace goes back to the client; an answer that cannot carry
         * it (out of memory) still goes out */
        if (r->trace_id[0])
            (void)MHD_add_response_header(resp, "traceparent", tp);
        rc = MHD_queue_response(r->conn, status, resp);
        MHD_destroy_response(resp);
    }
    if (rc != MHD_YES)
        return MHD_NO;
    r->state = ST_ANSWERED;
    r->status = status;
    r->resp_bytes = bytes;
    observe_duration(r);
    return MHD_YES;
}

enum MHD_Result segd_respond_error(request *r, unsigned status, const char *message)
{
    size_t bytes = 0;
    const char *hn = NULL, *hv = NULL;
    if (status == 503 && segd_routes[r->route < R_NONE ? r->route : R_STATIC].post) {
        hn = "Retry-After";
        hv = RETRY_AFTER_S;
    } else if (status == 405) {
        hn = "Allow";
        hv = segd_routes[r->route].allow;
    } else if (status == 401) { /* RFC 6750 3 */
        hn = "WWW-Authenticate";
        hv = strstr(message, "invalid") ? "Bearer realm=\"segd\", error=\"invalid_token\""
                                        : "Bearer realm=\"segd\"";
    }
    struct MHD_Response *resp = segd_respond_make_error(r->srv, r->id, (int)status, message, hn, hv,
                                                        &bytes, segd_route_is_oip(r->route));
    return segd_respond_send(r, status, resp, bytes);
}

enum MHD_Result segd_respond_text(request *r, unsigned status, char *body, const char *ctype)
{
    if (!body) /* out of memory: the start-up 503 */
        return segd_respond_send(r, 503, NULL, 0);
    size_t len = strlen(body);
    return segd_respond_send(r, status, segd_respond_buffer(r->srv, r->id, body, len, ctype), len);
}

/* Answer mid-upload: libmicrohttpd 0.9.75 cannot queue a response while
 * it reads a body (MHD_queue_response refuses that state), so the error is
 * written to the socket here, on the connection's thread, where nothing
 * else is being written (a 100 Continue, if any, is sent completely before
 * the body is read), with "Connection: close" and a FIN after it.  The
 * request then goes to ST_ABORTED: what the client still sends is dropped
 * (a client that reads while it sends, as curl does, stops at once), up to
 * another --max-body, and the connection closes when the client does.
 * Closing at once instead would reset the connection while body bytes
 * arrive, and a reset can discard the answer before the client reads it.
 * Used when a body of unknown length (chunked) crosses --max-body.
 * MHD_YES when the answer went out, MHD_NO (close) when it could not. */
enum MHD_Result segd_respond_abort(request *r, unsigned status, const char *message)
{
    segd_server *s = r->srv;
    if (s->tls_key) /* the socket carries TLS records: no plain answer on it, close */
        return MHD_NO;
    char *body = segd_route_is_oip(r->route)
                     ? segd_http_oip_error_body(message)
                     : segd_http_error_body(segd_http_error_code((int)status), message);
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
                     "X-Content-Type-Options: nosniff\r\ntraceparent: 00-%s-%s-%s\r\n%s%s%s%s\r\n",
                     status, MHD_get_reason_phrase_for(status), blen, r->id, r->trace_id,
                     r->span_id, r->trace_flags,
                     s->cfg.cors_origin[0] ? "Access-Control-Allow-Origin: " : "",
                     s->cfg.cors_origin,
                     s->cfg.cors_origin[0] ? "\r\nAccess-Control-Expose-Headers: " CORS_EXPOSE_HEADERS "\r\n" : "",
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
            r->state = ST_ABORTED;
            r->discarded = 0;
            r->status = status;
            r->resp_bytes = blen;
            r->sent_directly = true; /* counted in on_completed */
            observe_duration(r);
            free(body);
            return MHD_YES;
        }
    }
    free(body);
    return MHD_NO;
}

/* An error found in the request head: answered once the request is read
 * (ST_DEFER) so that the connection stays open, or at once (and the
 * connection closed) when the client waits for 100 Continue: it has not
 * sent the body, and should not. */
enum MHD_Result segd_respond_reject(request *r, unsigned status, const char *message)
{
    if (status && r->has_body && r->expect_continue)
        return segd_respond_error(r, status, message);
    r->pend_status = status;
    snprintf(r->pend_msg, sizeof r->pend_msg, "%s", message);
    r->state = ST_DEFER;
    if (r->has_body)
        segd_guard_phase(r->srv, r->conn, CP_BODY); /* the body deadline applies */
    return MHD_YES;
}

/* One JSON line per request on the log (never blocks: see segd/log.h). */
void segd_respond_access_log(segd_server *s, const request *r, enum MHD_RequestTerminationCode toe)
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
                             r->route == R_NONE || r->route == R_STATIC ? path : segd_routes[r->route].path,
                             "status", (int)r->status, "bytes", (json_int_t)r->resp_bytes,
                             "ms", round(segd_ms_since(r->t_start) * 1000.0) / 1000.0);
    if (line && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        json_object_set_new(line, "aborted", json_true());
    if (line && r->trace_id[0])
        json_object_set_new(line, "trace_id", json_string(r->trace_id));
    if (line && r->dropped) /* its job never ran: the client had gone */
        json_object_set_new(line, "dropped", json_string("client disconnected"));
    char *text = line ? segd_json_text(line, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(line);
    if (text) {
        size_t n = strlen(text);
        segd_log_line(s->log, text, n); /* never blocks: see segd/log.h */
        free(text);
    }
}
