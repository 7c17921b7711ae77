/* Pure helpers of the HTTP layer: request ids, query values, media types,
 * error documents, engine errno -> HTTP status. */
#include "http/http.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

int segd_http_request_id_valid(const char *id)
{
    if (!id)
        return 0;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++)
        if (*p < 0x21 || *p > 0x7e || n >= SEGD_HTTP_REQUEST_ID_MAX)
            return 0;
    return n > 0;
}

/* RFC 9110 tchar */
static int is_tchar(int c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

int segd_http_transfer_encoding_check(const char *value)
{
    if (!value)
        return -EINVAL;
    size_t codings = 0;
    int chunked_at = -1, unknown = 0;
    const char *p = value;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *t = p;
        while (is_tchar((unsigned char)*p))
            p++;
        size_t n = (size_t)(p - t);
        if (n) {
            if (chunked_at >= 0)
                return -EINVAL; /* chunked must be the last coding, and only once */
            if (n == 7 && strncasecmp(t, "chunked", 7) == 0)
                chunked_at = (int)codings;
            else
                unknown = 1;
            codings++;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == ';') { /* transfer parameters: only for codings we do not know */
                if (n == 7 && strncasecmp(t, "chunked", 7) == 0)
                    return -EINVAL;
                p += strcspn(p, ",");
            }
        }
        if (*p == '\0')
            break;
        if (*p != ',')
            return -EINVAL;
        p++;
    }
    if (codings == 0)
        return -EINVAL;
    if (unknown)
        return -ENOTSUP;
    return 0;
}

int segd_http_content_length_parse(const char *value, unsigned long long *out)
{
    if (!value)
        return -EINVAL;
    size_t n = 0;
    unsigned long long v = 0;
    for (const char *p = value; *p; p++, n++) {
        if (*p < '0' || *p > '9' || n >= 19)
            return -EINVAL;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    if (n == 0)
        return -EINVAL;
    *out = v;
    return 0;
}

int segd_http_uri_has_nul(const char *uri, size_t len, int *in_path)
{
    int found = 0, query = 0;
    *in_path = 0;
    for (size_t i = 0; i < len; i++) {
        if (uri[i] == '?')
            query = 1;
        else if (uri[i] == '%' && i + 2 < len && uri[i + 1] == '0' && uri[i + 2] == '0') {
            found = 1;
            if (!query)
                *in_path = 1;
        }
    }
    return found;
}

int segd_http_media_type_is(const char *content_type, const char *type)
{
    if (!content_type)
        return 0;
    while (*content_type == ' ' || *content_type == '\t')
        content_type++;
    size_t n = strcspn(content_type, ";");
    while (n > 0 && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return n == strlen(type) && strncasecmp(content_type, type, n) == 0;
}

/* q-value of one media range's parameters [p, end): 1 when absent, 0 when
 * malformed ("q=abc" excludes rather than includes). */
static double accept_q(const char *p, const char *end)
{
    double q = 1.0;
    while (p < end) {
        const char *pe = p;
        while (pe < end && *pe != ';')
            pe++;
        while (p < pe && (*p == ' ' || *p == '\t'))
            p++;
        if (pe - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            char buf[16];
            size_t n = (size_t)(pe - p - 2);
            while (n > 0 && (p[2 + n - 1] == ' ' || p[2 + n - 1] == '\t'))
                n--;
            if (n == 0 || n >= sizeof buf)
                return 0;
            memcpy(buf, p + 2, n);
            buf[n] = '\0';
            char *e;
            q = strtod(buf, &e);
            if (*e || q < 0 || q > 1)
                return 0;
        }
        p = pe < end ? pe + 1 : end;
    }
    return q;
}

int segd_http_accepts(const char *accept, const char *type)
{
    if (!accept)
        return 1;
    const char *slash = strchr(type, '/');
    size_t tlen = strlen(type), major = slash ? (size_t)(slash - type) : tlen;
    int best = 0; /* 1 any type, 2 any subtype of the type, 3 the type itself */
    double best_q = 0;
    const char *p = accept;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *semi = p;
        while (semi < end && *semi != ';')
            semi++;
        const char *re = semi;
        while (re > p && (re[-1] == ' ' || re[-1] == '\t'))
            re--;
        size_t n = (size_t)(re - p);
        int level = 0;
        if (n == 3 && memcmp(p, "*/*", 3) == 0)
            level = 1;
        else if (n == major + 2 && strncasecmp(p, type, major) == 0 && p[major] == '/' &&
                 p[major + 1] == '*')
            level = 2;
        else if (n == tlen && strncasecmp(p, type, n) == 0)
            level = 3;
        if (level > best) { /* the most specific range decides (RFC 9110 12.5.1) */
            best = level;
            best_q = accept_q(semi < end ? semi + 1 : end, end);
        }
        p = comma ? comma + 1 : end;
    }
    return best > 0 && best_q > 0;
}

/* n lower-case hex digits at s, not all zero. */
static bool hex_id(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

int segd_http_traceparent_parse(const char *value, char *trace_id, char *flags)
{
    if (!value)
        return -EINVAL;
    size_t n = strlen(value);
    /* 2 + 1 + 32 + 1 + 16 + 1 + 2 */
    if (n < 55 || value[2] != '-' || value[35] != '-' || value[52] != '-')
        return -EINVAL;
    char v[3] = {value[0], value[1], 0};
    if (!hex_id(v, 2) && strcmp(v, "00") != 0)
        return -EINVAL;
    if (strcmp(v, "ff") == 0 || (strcmp(v, "00") == 0 && n != 55) ||
        (n > 55 && value[55] != '-'))
        return -EINVAL;
    if (!hex_id(value + 3, 32) || !hex_id(value + 36, 16))
        return -EINVAL;
    char f[3] = {value[53], value[54], 0};
    if (!hex_id(f, 2) && strcmp(f, "00") != 0)
        return -EINVAL;
    memcpy(trace_id, value + 3, 32);
    trace_id[32] = '\0';
    memcpy(flags, f, 3);
    return 0;
}

int segd_http_seconds_parse(const char *value, double *out)
{
    if (!value || !*value)
        return -EINVAL;
    for (const char *p = value; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '-'))
            return -EINVAL; /* no sign in front, spaces, hex, inf or nan */
    if (value[0] == '-')
        return -EINVAL;
    char *end;
    double v = strtod(value, &end);
    if (*end || !isfinite(v) || !(v > 0))
        return -EINVAL;
    *out = v;
    return 0;
}

int segd_http_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p++;
        if (c < 0x80)
            continue;
        int more;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (end - p < more)
            return 0;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
    }
    return 1;
}

/* Length of the well-formed UTF-8 character at s (< end) that may stay in
 * an id (U+00A0 and up: C1 controls are not kept), else 0. */
static size_t id_utf8_char(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0 || (size_t)(end - s) < n)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xc2 && s[1] < 0xa0) || (c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) ||
        (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

void segd_http_id_from_filename(const char *filename, size_t len, char *out, size_t cap)
{
    const char *start = filename;
    for (size_t i = 0; i < len; i++)
        if (filename[i] == '/' || filename[i] == '\\')
            start = filename + i + 1;
    size_t n = len - (size_t)(start - filename);
    const char *dot = NULL;
    for (size_t i = 1; i < n; i++) /* a leading dot is not an extension */
        if (start[i] == '.')
            dot = start + i;
    if (dot)
        n = (size_t)(dot - start);
    const unsigned char *p = (const unsigned char *)start, *end = p + n;
    size_t o = 0;
    while (p < end) {
        size_t k = *p < 0x80 ? 1 : id_utf8_char(p, end);
        if (o + (k ? k : 1) + 1 > cap)
            break; /* shortened on a character boundary */
        if (k > 1) {
            memcpy(out + o, p, k);
            o += k;
            p += k;
            continue;
        }
        unsigned char c = *p++;
        out[o++] = (k == 1 && (isalnum(c) || c == '.' || c == '_' || c == '-')) ? (char)c : '_';
    }
    out[o] = '\0';
}

static unsigned be32(const unsigned char *p)
{
    return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3];
}

int segd_http_png_size(const void *data, size_t len, unsigned *width, unsigned *height)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *p = data;
    /* signature, then IHDR: length 13, "IHDR", width, height */
    if (len < 8 + 8 + 8 || memcmp(p, sig, 8) != 0 || be32(p + 8) != 13 ||
        memcmp(p + 12, "IHDR", 4) != 0)
        return -EINVAL;
    *width = be32(p + 16);
    *height = be32(p + 20);
    return 0;
}

int segd_http_status_for_errno(int err)
{
    switch (err) {
    case -EINVAL: return 400;
    case -E2BIG: return 413;
    case -EDOM: return 422;
    case -EXDEV: return 422;
    case -ENOTSUP: return 415;
    case -ENOMEM: return 503;
    default: return 500;
    }
}

const char *segd_http_error_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 406: return "not_acceptable";
    case 408: return "request_timeout";
    case 413: return "payload_too_large";
    case 414: return "uri_too_long";
    case 415: return "unsupported_media_type";
    case 431: return "header_fields_too_large";
    case 422: return "unprocessable_image";
    case 501: return "not_implemented";
    case 503: return "unavailable";
    case 504: return "deadline_exceeded";
    default: return "internal_error";
    }
}

char *segd_http_error_body(const char *code, const char *message)
{
    /* messages may quote client bytes: keep them printable ASCII so that
     * the document is always valid UTF-8 */
    char clean[512];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)message; *p && n + 1 < sizeof clean; p++)
        clean[n++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
    clean[n] = '\0';
    json_t *doc = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", clean);
    if (!doc)
        return NULL;
    char *text = segd_json_text(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

char *segd_json_text(const json_t *doc, size_t flags)
{
    /* Not json_dumps(): jansson (2.14) ignores a failed append of an
     * object key to its growing buffer, so under memory pressure it can
     * return a document with a key missing, i.e. a wrong answer.  Sizing
     * first and dumping into a buffer of that size allocates only once. */
    size_t n = json_dumpb(doc, NULL, 0, flags);
    if (n == 0)
        return NULL;
    char *text = malloc(n + 1);
    if (!text)
        return NULL;
    if (json_dumpb(doc, text, n, flags) != n) {
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}
