/* The checks every request head passes before routing: body framing
 * (Transfer-Encoding, Content-Length against --max-body), sizes of the
 * target and the header fields, and NUL bytes anywhere in the head. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/server_impl.h"

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

/* Framing: what the body is, or whether it can be read at all (the
 * Transfer-Encoding and Content-Length lines of h).  0, or a status with
 * msg set: the body cannot be read, answer at once. */
static unsigned check_framing(request *r, const head_scan *h, const char *version, char *msg,
                              size_t msglen)
{
    segd_server *s = r->srv;
    bool http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    if (h->n_te) {
        int rc = h->te_long ? -EINVAL : segd_http_transfer_encoding_check(h->te);
        if (rc == -ENOTSUP) {
            snprintf(msg, msglen, "Transfer-Encoding '%.200s' is not supported (only chunked)", h->te);
            return 501;
        }
        if (rc) {
            snprintf(msg, msglen, "malformed Transfer-Encoding '%.200s'", h->te);
            return 400;
        }
        if (http10) {
            snprintf(msg, msglen, "Transfer-Encoding in an HTTP/1.0 request");
            return 400;
        }
        if (h->n_cl) {
            snprintf(msg, msglen, "both Transfer-Encoding and Content-Length");
            return 400;
        }
        r->has_body = true;
    }
    if (h->n_cl > 1) {
        snprintf(msg, msglen, "more than one Content-Length header");
        return 400;
    }
    if (h->n_cl == 1) {
        if (segd_http_content_length_parse(h->cl, &r->content_length)) {
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
    return 0;
}

/* Checks of the request head before any route.  Returns 0, or a status
 * with msg set and *fatal telling whether the body's framing is unknown
 * or refused (answer at once and close) or the request can be read to
 * its end first. */
unsigned segd_head_check(request *r, const char *method, const char *version, char *msg,
                         size_t msglen, bool *fatal, bool *bad_headers)
{
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

    *fatal = true;
    unsigned status = check_framing(r, &h, version, msg, msglen);
    if (status)
        return status;

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
