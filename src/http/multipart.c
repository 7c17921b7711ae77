/* multipart/form-data parser: splits a complete body held in memory into
 * its parts without copying (see multipart.h for the contract). */
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

/* Parse one value (token or quoted-string) at *p (< end) into out (cap >= 1).
 * Advances *p past it.  0 or -EINVAL (bad quoting, too long, empty). */
static int parse_value(const char **p, const char *end, char *out, size_t cap)
{
    const char *s = *p;
    size_t n = 0;
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
            if (n + 1 >= cap)
                return -EINVAL;
            out[n++] = c;
        }
    } else {
        while (s < end && is_token_char((unsigned char)*s)) {
            if (n + 1 >= cap)
                return -EINVAL;
            out[n++] = *s++;
        }
        if (n == 0)
            return -EINVAL;
    }
    out[n] = '\0';
    *p = s;
    return 0;
}

/* Find parameter key in the "; k=v; ..." list [p, end) and copy its value.
 * 1 found, 0 absent, -EINVAL malformed. */
static int find_param(const char *p, const char *end, const char *key, char *out, size_t cap)
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
        char tmp[SEGD_MULTIPART_FILENAME_MAX];
        int rc = parse_value(&p, end, tmp, sizeof tmp);
        if (rc)
            return rc;
        if (n == klen && strncasecmp(k, key, n) == 0) {
            if (strlen(tmp) + 1 > cap)
                return -EINVAL;
            memcpy(out, tmp, strlen(tmp) + 1);
            return 1;
        }
    }
}

int segd_multipart_boundary(const char *content_type, char *out, size_t cap)
{
    if (!content_type || cap < SEGD_MULTIPART_BOUNDARY_MAX + 1)
        return -EINVAL;
    const char *end = content_type + strlen(content_type);
    const char *semi = memchr(content_type, ';', (size_t)(end - content_type));
    if (!semi)
        return -EINVAL;
    /* the media type itself must be multipart/form-data */
    const char *t = content_type, *te = semi;
    while (t < te && is_lwsp((unsigned char)*t))
        t++;
    while (te > t && is_lwsp((unsigned char)te[-1]))
        te--;
    if ((size_t)(te - t) != strlen("multipart/form-data") ||
        strncasecmp(t, "multipart/form-data", (size_t)(te - t)) != 0)
        return -EINVAL;
    int rc = find_param(semi, end, "boundary", out, cap);
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

/* Header lines of one part, [p, end of the blank line).  Fills part. */
static int parse_headers(const cursor *c, const uint8_t **pp, segd_multipart_part *part)
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
            return disposition ? 0 : -EINVAL;
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
            if ((size_t)(t - v) != strlen("form-data") ||
                strncasecmp(v, "form-data", (size_t)(t - v)) != 0)
                return -EINVAL;
            int rc = find_param(t, vend, "name", part->name, sizeof part->name);
            if (rc < 0)
                return rc;
            rc = find_param(t, vend, "filename", part->filename, sizeof part->filename);
            if (rc < 0)
                return rc;
            part->has_filename = rc == 1;
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

int segd_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                         segd_multipart_part *parts, size_t max_parts,
                         size_t *nparts)
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
        int rc = parse_headers(&c, &p, part);
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
