/* multipart/form-data and multipart/related parser: splits a complete body
 * held in memory into its parts without copying (see multipart.h for the
 * contract). */
#include "multipart.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define LINE_MAX_BYTES 8192

static bool is_lwsp(int c) { return c == ' ' || c == '\t'; }

/* RFC 2045 token characters (tspecials excluded). */
static bool is_token_char(int c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Boundary characters of RFC 2046 (bchars), space excluded at the end. */
static bool is_bchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c && strchr("'()+_,-./:=? ", c));
}

/* ---- parameters: "; key=value" lists of Content-Type and Content-Disposition ---- */

/* Length of the UTF-8 sequence at s (< end) when it is one well-formed
 * character (no overlongs, surrogates or code points past U+10FFFF), else 0. */
static size_t utf8_char(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
             : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0 || (size_t)(end - s) < n)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* Cut the NUL-terminated text in buf (which held more than fits) back to
 * a whole UTF-8 character, so that a shortened name stays valid text. */
static void utf8_trim(char *buf, size_t n)
{
    size_t i = n;
    while (i > 0 && ((unsigned char)buf[i - 1] & 0xc0) == 0x80)
        i--;
    if (i > 0 && (unsigned char)buf[i - 1] >= 0xc0) {
        size_t need = utf8_char((const unsigned char *)buf + i - 1, (const unsigned char *)buf + n);
        if (need == 0)
            n = i - 1;
    }
    buf[n] = '\0';
}

/* Parse one value (token or quoted-string) at *p (< end) into out (cap >= 1).
 * Advances *p past it.  0 or -EINVAL (bad quoting, empty, or too long
 * unless truncate: then shortened to a whole UTF-8 character). */
static int parse_value(const char **p, const char *end, char *out, size_t cap, bool truncate)
{
    const char *s = *p;
    size_t n = 0;
    bool cut = false;
    if (s < end && *s == '"') {
        s++;
        for (;;) {
            if (s >= end)
                return -EINVAL;
            char c = *s++;
            if (c == '"')
                break;
            /* a backslash escapes only '"' and '\\': browsers send
             * Windows paths (C:\dir\f.png) unescaped */
            if (c == '\\' && s < end && (*s == '"' || *s == '\\'))
                c = *s++;
            if (c == '\r' || c == '\n' || c == '\0')
                return -EINVAL;
            if (n + 1 >= cap) {
                if (!truncate)
                    return -EINVAL;
                cut = true;
                continue;
            }
            out[n++] = c;
        }
    } else {
        const char *t = s;
        while (s < end && is_token_char((unsigned char)*s)) {
            if (n + 1 >= cap) {
                if (!truncate)
                    return -EINVAL;
                cut = true;
                s++;
                continue;
            }
            out[n++] = *s++;
        }
        if (s == t)
            return -EINVAL;
    }
    out[n] = '\0';
    if (cut)
        utf8_trim(out, n);
    *p = s;
    return 0;
}

/* Find parameter key in the "; k=v; ..." list [p, end) and copy its value
 * (shortened when truncate, else a value that does not fit is malformed).
 * 1 found, 0 absent, -EINVAL malformed. */
static int find_param(const char *p, const char *end, const char *key, char *out, size_t cap,
                      bool truncate)
{
    size_t klen = strlen(key);
    for (;;) {
        while (p < end && is_lwsp((unsigned char)*p))
            p++;
        if (p >= end)
            return 0;
        if (*p != ';')
            return -EINVAL;
        p++;
        while (p < end && is_lwsp((unsigned char)*p))
            p++;
        if (p >= end)
            return 0; /* tolerate a trailing ';' */
        const char *k = p;
        while (p < end && is_token_char((unsigned char)*p))
            p++;
        size_t n = (size_t)(p - k);
        while (p < end && is_lwsp((unsigned char)*p))
            p++;
        if (n == 0 || p >= end || *p != '=')
            return -EINVAL;
        p++;
        while (p < end && is_lwsp((unsigned char)*p))
            p++;
        bool match = n == klen && strncasecmp(k, key, n) == 0;
        char skip[8];
        int rc = match ? parse_value(&p, end, out, cap, truncate)
                       : parse_value(&p, end, skip, sizeof skip, true); /* other values: skipped */
        if (rc)
            return rc;
        if (match)
            return 1;
    }
}

/* The media type of a Content-Type value, [*t, *te), without spaces; the
 * parameters start at the returned pointer (';' or the end). */
static const char *media_type(const char *content_type, const char **t, const char **te)
{
    const char *end = content_type + strlen(content_type);
    const char *semi = memchr(content_type, ';', (size_t)(end - content_type));
    const char *params = semi ? semi : end;
    *t = content_type;
    *te = params;
    while (*t < *te && is_lwsp((unsigned char)**t))
        (*t)++;
    while (*te > *t && is_lwsp((unsigned char)(*te)[-1]))
        (*te)--;
    return params;
}

int segd_multipart_boundary_of(const char *content_type, const char *type, char *out, size_t cap)
{
    if (!content_type || !type || cap < SEGD_MULTIPART_BOUNDARY_MAX + 1)
        return -EINVAL;
    const char *t, *te;
    const char *params = media_type(content_type, &t, &te);
    const char *end = content_type + strlen(content_type);
    if ((size_t)(te - t) != strlen(type) || strncasecmp(t, type, (size_t)(te - t)) != 0)
        return -EINVAL;
    int rc = find_param(params, end, "boundary", out, cap, false);
    if (rc != 1)
        return -EINVAL;
    size_t n = strlen(out);
    if (n < 1 || n > SEGD_MULTIPART_BOUNDARY_MAX || out[n - 1] == ' ')
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!is_bchar((unsigned char)out[i]))
            return -EINVAL;
    return 0;
}

int segd_multipart_boundary(const char *content_type, char *out, size_t cap)
{
    return segd_multipart_boundary_of(content_type, "multipart/form-data", out, cap);
}

int segd_multipart_param(const char *content_type, const char *key, char *out, size_t cap)
{
    if (!content_type || !key || cap < 1)
        return -EINVAL;
    const char *t, *te;
    const char *params = media_type(content_type, &t, &te);
    int rc = find_param(params, content_type + strlen(content_type), key, out, cap, false);
    if (rc == 0)
        out[0] = '\0';
    return rc < 0 ? rc : rc == 1 ? 0 : -ENOENT;
}

/* ---- body ---- */

typedef struct cursor {
    const uint8_t *body, *end;
    const char *boundary;
    size_t blen;
} cursor;

/* Is there a delimiter "--boundary" at p whose line is a real delimiter
 * line (followed by "--" or by optional LWSP and CRLF)?  Sets *after to the
 * first byte after "--boundary". */
static bool delimiter_at(const cursor *c, const uint8_t *p, const uint8_t **after)
{
    if ((size_t)(c->end - p) < c->blen + 2 || p[0] != '-' || p[1] != '-' ||
        memcmp(p + 2, c->boundary, c->blen) != 0)
        return false;
    const uint8_t *q = p + 2 + c->blen;
    *after = q;
    if (c->end - q >= 2 && q[0] == '-' && q[1] == '-')
        return true;
    while (q < c->end && is_lwsp(*q))
        q++;
    return c->end - q >= 2 && q[0] == '\r' && q[1] == '\n';
}

/* Find the next "CRLF--boundary" delimiter line at or after p.  Returns the
 * CR position or NULL. */
static const uint8_t *find_delimiter(const cursor *c, const uint8_t *p, const uint8_t **after)
{
    while (p < c->end) {
        const uint8_t *hit = memmem(p, (size_t)(c->end - p), "\r\n--", 4);
        if (!hit)
            return NULL;
        if (delimiter_at(c, hit + 2, after))
            return hit;
        p = hit + 2;
    }
    return NULL;
}

/* ---- file names: RFC 5987 filename*, RFC 2047 encoded words ---- */

static int hex_val(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copy decoded bytes [in, in+n) into out (cap) as UTF-8 text: latin1
 * bytes are converted, UTF-8 must be well-formed; controls refused.
 * Shortened to a whole character when it does not fit.  0 or -EINVAL. */
static int put_text(const unsigned char *in, size_t n, bool latin1, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char enc[4];
        size_t k;
        if (in[i] < 0x20 || in[i] == 0x7f)
            return -EINVAL;
        if (latin1) {
            if (in[i] < 0x80) {
                enc[0] = in[i];
                k = 1;
            } else {
                enc[0] = (unsigned char)(0xc0 | (in[i] >> 6));
                enc[1] = (unsigned char)(0x80 | (in[i] & 0x3f));
                k = 2;
            }
            i++;
        } else {
            k = utf8_char(in + i, in + n);
            if (k == 0)
                return -EINVAL;
            memcpy(enc, in + i, k);
            i += k;
        }
        if (o + k + 1 > cap)
            break; /* shortened, on a character boundary */
        memcpy(out + o, enc, k);
        o += k;
    }
    out[o] = '\0';
    return 0;
}

/* 1 utf-8, 2 latin1 (iso-8859-1, us-ascii being a subset), 0 other. */
static int charset_kind(const char *cs, size_t n)
{
    if ((n == 5 && strncasecmp(cs, "utf-8", 5) == 0) || (n == 4 && strncasecmp(cs, "utf8", 4) == 0))
        return 1;
    if ((n == 10 && strncasecmp(cs, "iso-8859-1", 10) == 0) ||
        (n == 8 && strncasecmp(cs, "us-ascii", 8) == 0))
        return 2;
    return 0;
}

/* RFC 5987 ext-value charset'language'pct-encoded into out.  0, or
 * -EINVAL (unknown charset, bad escape, not text): then the plain
 * filename parameter is used. */
static int decode_ext_value(const char *ext, char *out, size_t cap)
{
    const char *q1 = strchr(ext, '\'');
    const char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
    if (!q2)
        return -EINVAL;
    int kind = charset_kind(ext, (size_t)(q1 - ext));
    if (!kind)
        return -EINVAL;
    unsigned char raw[SEGD_MULTIPART_FILENAME_MAX * 3];
    size_t n = 0;
    for (const char *p = q2 + 1; *p && n < sizeof raw; p++) {
        if (*p == '%') {
            int hi = hex_val((unsigned char)p[1]), lo = hi < 0 ? -1 : hex_val((unsigned char)p[2]);
            if (lo < 0)
                return -EINVAL;
            raw[n++] = (unsigned char)(hi << 4 | lo);
            p += 2;
        } else {
            raw[n++] = (unsigned char)*p;
        }
    }
    if (n == 0)
        return -EINVAL;
    return put_text(raw, n, kind == 2, out, cap);
}

/* A file name made only of RFC 2047 encoded words ("=?UTF-8?B?...?=",
 * "=?iso-8859-1?Q?...?=", separated by spaces), as some clients send
 * despite RFC 7578, is replaced by its decoded text; anything else, or a
 * word that does not decode, leaves buf as it is. */
static void decode_rfc2047(char *buf)
{
    unsigned char raw[SEGD_MULTIPART_FILENAME_MAX];
    char text[SEGD_MULTIPART_FILENAME_MAX];
    size_t n = 0, words = 0;
    int kind = 0;
    const char *p = buf;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (p[0] != '=' || p[1] != '?')
            return;
        const char *cs = p + 2, *q = strchr(cs, '?');
        if (!q || !q[1] || q[2] != '?')
            return;
        int k = charset_kind(cs, (size_t)(q - cs));
        if (!k || (kind && k != kind))
            return;
        kind = k;
        char enc = q[1];
        const char *t = q + 3, *e = strstr(t, "?=");
        if (!e)
            return;
        if (enc == 'B' || enc == 'b') {
            unsigned acc = 0;
            int bits = 0;
            for (const char *c = t; c < e; c++) {
                const char *b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                if (*c == '=')
                    break;
                const char *d = strchr(b64, *c);
                if (!d || !*c)
                    return;
                acc = (acc << 6) | (unsigned)(d - b64);
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    if (n >= sizeof raw)
                        return;
                    raw[n++] = (unsigned char)(acc >> bits);
                    acc &= (1u << bits) - 1;
                }
            }
        } else if (enc == 'Q' || enc == 'q') {
            for (const char *c = t; c < e; c++) {
                int v = (unsigned char)*c;
                if (*c == '_') {
                    v = ' ';
                } else if (*c == '=') {
                    int hi = hex_val((unsigned char)c[1]), lo = hi < 0 ? -1 : hex_val((unsigned char)c[2]);
                    if (lo < 0)
                        return;
                    v = hi << 4 | lo;
                    c += 2;
                }
                if (n >= sizeof raw)
                    return;
                raw[n++] = (unsigned char)v;
            }
        } else {
            return;
        }
        words++;
        p = e + 2;
    }
    if (words && n && put_text(raw, n, kind == 2, text, sizeof text) == 0)
        memcpy(buf, text, strlen(text) + 1);
}

/* Header lines of one part, [p, end of the blank line).  Fills part. */
static int parse_headers(const cursor *c, const uint8_t **pp, segd_multipart_part *part,
                         bool form_data)
{
    const uint8_t *p = *pp;
    bool disposition = false;
    for (;;) {
        size_t room = (size_t)(c->end - p);
        const uint8_t *eol = memmem(p, room < LINE_MAX_BYTES + 2 ? room : LINE_MAX_BYTES + 2,
                                    "\r\n", 2);
        if (!eol)
            return -EINVAL; /* unterminated or over-long header line */
        if (eol == p) {
            *pp = p + 2;
            return disposition || !form_data ? 0 : -EINVAL;
        }
        const char *line = (const char *)p, *lend = (const char *)eol;
        p = eol + 2;
        if (is_lwsp((unsigned char)line[0]))
            return -EINVAL; /* obsolete line folding */
        const char *colon = memchr(line, ':', (size_t)(lend - line));
        if (!colon || colon == line)
            return -EINVAL;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < lend && is_lwsp((unsigned char)*v))
            v++;
        const char *vend = lend;
        while (vend > v && is_lwsp((unsigned char)vend[-1]))
            vend--;
        if (nlen == strlen("Content-Disposition") &&
            strncasecmp(line, "Content-Disposition", nlen) == 0) {
            if (disposition)
                return -EINVAL;
            disposition = true;
            const char *t = v;
            while (t < vend && is_token_char((unsigned char)*t))
                t++;
            /* multipart/related parts may carry one of any kind (RFC 2387
             * names none); only form-data names the part and its file */
            bool is_form = (size_t)(t - v) == strlen("form-data") &&
                           strncasecmp(v, "form-data", (size_t)(t - v)) == 0;
            if (form_data && !is_form)
                return -EINVAL;
            if (!is_form)
                continue;
            int rc = find_param(t, vend, "name", part->name, sizeof part->name, false);
            if (rc < 0)
                return rc;
            rc = find_param(t, vend, "filename", part->filename, sizeof part->filename, true);
            if (rc < 0)
                return rc;
            part->has_filename = rc == 1;
            if (rc == 1)
                decode_rfc2047(part->filename);
            /* filename* (RFC 5987/6266) wins over filename when decodable */
            char ext[SEGD_MULTIPART_FILENAME_MAX * 3];
            rc = find_param(t, vend, "filename*", ext, sizeof ext, true);
            if (rc < 0)
                return rc;
            if (rc == 1 && decode_ext_value(ext, part->filename, sizeof part->filename) == 0)
                part->has_filename = 1;
        } else if (nlen == strlen("Content-Type") &&
                   strncasecmp(line, "Content-Type", nlen) == 0) {
            size_t n = (size_t)(vend - v);
            if (n + 1 > sizeof part->content_type)
                return -EINVAL;
            memcpy(part->content_type, v, n);
            part->content_type[n] = '\0';
        }
    }
}

static int parse_body(const uint8_t *body, size_t len, const char *boundary, bool form_data,
                      segd_multipart_part *parts, size_t max_parts, size_t *nparts)
{
    *nparts = 0;
    if (!body || !boundary)
        return -EINVAL;
    cursor c = {body, body + len, boundary, strlen(boundary)};
    if (c.blen == 0 || c.blen > SEGD_MULTIPART_BOUNDARY_MAX)
        return -EINVAL;

    /* first delimiter: at the very start, or after a preamble */
    const uint8_t *after;
    if (!delimiter_at(&c, body, &after)) {
        if (!find_delimiter(&c, body, &after))
            return -EINVAL;
    }
    for (;;) {
        /* after points just past "--boundary" of a delimiter line */
        if (c.end - after >= 2 && after[0] == '-' && after[1] == '-')
            return 0; /* close delimiter; the epilogue is ignored */
        const uint8_t *p = after;
        while (p < c.end && is_lwsp(*p))
            p++;
        p += 2; /* the CRLF, checked by delimiter_at() */
        if (*nparts == max_parts)
            return -E2BIG;
        segd_multipart_part *part = &parts[*nparts];
        memset(part, 0, sizeof *part);
        int rc = parse_headers(&c, &p, part, form_data);
        if (rc)
            return rc;
        /* the CRLF before "--boundary" belongs to the delimiter, so an
         * empty part is "headers CRLF CRLF CRLF --boundary" */
        const uint8_t *next = find_delimiter(&c, p, &after);
        if (!next)
            return -EINVAL;
        part->data = p;
        part->len = (size_t)(next - p);
        (*nparts)++;
    }
}

int segd_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                         segd_multipart_part *parts, size_t max_parts, size_t *nparts)
{
    return parse_body(body, len, boundary, true, parts, max_parts, nparts);
}

int segd_multipart_parse_related(const uint8_t *body, size_t len, const char *boundary,
                                 segd_multipart_part *parts, size_t max_parts, size_t *nparts)
{
    return parse_body(body, len, boundary, false, parts, max_parts, nparts);
}
