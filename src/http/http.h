/* Small pure helpers of the HTTP layer (no sockets, no threads): request-id
 * validation, query values, media types, error documents and the mapping of
 * engine errors to HTTP statuses.  Each function is thread-safe. */
#ifndef SEGD_HTTP_H
#define SEGD_HTTP_H

#include <stddef.h>

#include <jansson.h>

#define SEGD_HTTP_REQUEST_ID_MAX 128
#define SEGD_HTTP_URL_MAX 8192        /* raw request target; longer: 414 */
#define SEGD_HTTP_HEADERS_MAX 32768   /* request header block; larger: 431 */
/* libmicrohttpd's per-connection memory: large enough that requests up to
 * a few times the limits above reach segd (and get its JSON 414/431)
 * instead of libmicrohttpd's own HTML error page. */
#define SEGD_HTTP_CONN_MEMORY (512 * 1024)

/* 1 when id is acceptable as X-Request-Id: 1..128 printable ASCII
 * characters (0x21..0x7e, no spaces or controls), else 0. */
int segd_http_request_id_valid(const char *id);

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF), else 0.  Allocates nothing. */
int segd_http_utf8_valid(const char *s, size_t n);

/* Check the combined Transfer-Encoding values of a request (several
 * header lines joined with ", ").  segd decodes only "chunked", alone.
 * 0 when value is exactly the chunked coding (empty list elements and
 * spaces ignored), -ENOTSUP when it is a well-formed list naming another
 * coding ("identity", "gzip, chunked": 501), -EINVAL when malformed (no
 * coding, a character outside a token, chunked twice or not last: 400). */
int segd_http_transfer_encoding_check(const char *value);

/* Parse a Content-Length value: 1..19 ASCII digits and nothing else (no
 * sign, no spaces, no list).  0 or -EINVAL. */
int segd_http_content_length_parse(const char *value, unsigned long long *out);

/* 1 when the raw request target [uri, uri+len) holds a percent-encoded
 * NUL ("%00"), which libmicrohttpd would decode into a C string cut short;
 * *in_path says whether one is before the '?' (then the path is not what
 * the client asked for: 404) as opposed to only in the query (400). */
int segd_http_uri_has_nul(const char *uri, size_t len, int *in_path);

/* 1 when the media type of a Content-Type value (parameters ignored,
 * case-insensitive) equals type, e.g. ("image/png; q=1", "image/png"). */
int segd_http_media_type_is(const char *content_type, const char *type);

/* 1 when an Accept header value (NULL: absent, anything goes) admits the
 * media type type ("application/dicom"): the most specific matching range
 * (any type, any subtype of "application", or the type itself; parameters
 * other than q ignored) has q > 0 (RFC 9110 12.5.1); else 0.  A malformed q counts
 * as 0. */
int segd_http_accepts(const char *accept, const char *type);

/* W3C Trace Context (https://www.w3.org/TR/trace-context/, section 3.2):
 * parse a traceparent header value "VV-TRACEID-PARENTID-FLAGS" (lower-case
 * hex; version 00 exactly 55 characters; a later version at least that,
 * and anything after a '-'; version ff, an all-zero trace id or parent id
 * are invalid).  0 with trace_id (33 bytes: 32 hex + NUL) and flags (3
 * bytes) set, or -EINVAL (the caller starts a new trace). */
int segd_http_traceparent_parse(const char *value, char *trace_id, char *flags);

/* Parse a request timeout in seconds (X-Request-Timeout): a plain decimal
 * number ("2", "0.5", "1e1"), finite and > 0; no sign, spaces or hex.
 * 0 or -EINVAL. */
int segd_http_seconds_parse(const char *value, double *out);

/* Slice id from an uploaded file name: the last path component (after '/'
 * or '\\') without its final extension; ASCII outside [A-Za-z0-9._-] and
 * bytes that are not well-formed UTF-8 replaced by '_', other UTF-8
 * characters (U+00A0 and up) kept; shortened to at most cap-1 bytes on a
 * character boundary.  Writes "" when nothing is left.  Cannot fail
 * (cap >= 1). */
void segd_http_id_from_filename(const char *filename, size_t len, char *out, size_t cap);

/* Read the size from a PNG's signature and IHDR chunk (the first 33
 * bytes) so that a handler can refuse an upload without a worker.  0 with
 * *width, *height set (possibly 0), or -EINVAL when data does not start
 * like a PNG (signature, IHDR length/type).  The rest is left to the
 * decoder. */
int segd_http_png_size(const void *data, size_t len, unsigned *width, unsigned *height);

/* HTTP status for a negative errno of segd_worker_segment_png() or of the
 * DICOM module (include/segd/dicom.h): -EINVAL 400, -E2BIG 413, -EDOM and
 * -EXDEV 422, -ENOTSUP (transfer syntax) 415, -ENOMEM 503, anything else
 * 500. */
int segd_http_status_for_errno(int err);

/* Stable machine-readable error code for a status ("bad_request", ...). */
const char *segd_http_error_code(int status);

/* The error document {"error":{"code":code,"message":message}} as a
 * malloc'ed NUL-terminated JSON text, or NULL on OOM. */
char *segd_http_error_body(const char *code, const char *message);

/* doc as a malloc'ed NUL-terminated JSON text (json_dumpb flags), or NULL
 * on OOM: never a document with a part missing, which json_dumps() can
 * return when an allocation fails. */
char *segd_json_text(const json_t *doc, size_t flags);

#endif
