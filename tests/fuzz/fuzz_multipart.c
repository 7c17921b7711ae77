/* libFuzzer harness: the multipart/form-data parser (src/http/multipart.h).
 * Input: a Content-Type value up to the first '\n', then the body.  The
 * boundary comes from segd_multipart_boundary() on that value, or is
 * "segdfuzzBoundary" when it is refused (so that bodies are still parsed).
 * The body is copied into an exactly sized heap block so that ASan sees
 * any read past its end.  Invariants: a valid boundary is 1..70 bchars;
 * parts lie inside the body, in order, with NUL-terminated fields; the
 * return value is one of 0, -E2BIG, -EINVAL; -E2BIG only with max_parts
 * parts. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/multipart.h"

#define MAX_PARTS 4

static void check_field(const char *f, size_t cap, const char *what)
{
    if (!memchr(f, '\0', cap)) {
        fprintf(stderr, "%s not NUL-terminated\n", what);
        abort();
    }
}

/* Abort unless a parse result keeps the contract: documented return,
 * part count, parts inside the body and in order, fields terminated. */
static void check_parts(int rc, const segd_multipart_part *parts, size_t nparts,
                        const uint8_t *body, size_t blen)
{
    if (rc != 0 && rc != -E2BIG && rc != -EINVAL) {
        fprintf(stderr, "undocumented return %d\n", rc);
        abort();
    }
    if (nparts > MAX_PARTS || (rc == -E2BIG && nparts != MAX_PARTS)) {
        fprintf(stderr, "rc %d with %zu parts\n", rc, nparts);
        abort();
    }
    if (rc == 0) {
        const uint8_t *prev_end = body;
        for (size_t i = 0; i < nparts; i++) {
            const segd_multipart_part *p = &parts[i];
            check_field(p->name, sizeof p->name, "name");
            check_field(p->filename, sizeof p->filename, "filename");
            check_field(p->content_type, sizeof p->content_type, "content_type");
            if (p->data < prev_end || p->data > body + blen || p->len > (size_t)(body + blen - p->data)) {
                fprintf(stderr, "part %zu [%p, +%zu) outside the body or out of order\n", i,
                        (const void *)p->data, p->len);
                abort();
            }
            /* touch every byte: ASan reports a stale pointer */
            volatile uint8_t sum = 0;
            for (size_t k = 0; k < p->len; k++)
                sum += p->data[k];
            (void)sum;
            prev_end = p->data + p->len;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t clen = nl ? (size_t)(nl - data) : 0;
    size_t off = nl ? clen + 1 : 0;
    char *ctype = malloc(clen + 1);
    uint8_t *body = malloc(size - off ? size - off : 1);
    if (!ctype || !body)
        abort();
    memcpy(ctype, data, clen);
    ctype[clen] = '\0';
    size_t blen = size - off;
    memcpy(body, data + off, blen);

    char boundary[SEGD_MULTIPART_BOUNDARY_MAX + 1];
    memset(boundary, 'x', sizeof boundary);
    if (segd_multipart_boundary(ctype, boundary, sizeof boundary) == 0) {
        size_t n = strnlen(boundary, sizeof boundary);
        if (n == 0 || n > SEGD_MULTIPART_BOUNDARY_MAX) {
            fprintf(stderr, "accepted boundary of %zu bytes\n", n);
            abort();
        }
    } else {
        strcpy(boundary, "segdfuzzBoundary");
    }

    segd_multipart_part parts[MAX_PARTS];
    size_t nparts = 99;
    int rc = segd_multipart_parse(body, blen, boundary, parts, MAX_PARTS, &nparts);
    check_parts(rc, parts, nparts, body, blen);
    /* the same body as multipart/related (no Content-Disposition needed) */
    nparts = 99;
    rc = segd_multipart_parse_related(body, blen, boundary, parts, MAX_PARTS, &nparts);
    check_parts(rc, parts, nparts, body, blen);
    free(body);
    free(ctype);
    return 0;
}
