/* multipart/form-data (RFC 7578) and multipart/related (RFC 2387, as
 * DICOMweb STOW-RS and WADO-RS send DICOM instances) parser over the common
 * syntax of RFC 2046 section 5.1: pure functions over a complete body in
 * memory, so that they can be fuzzed on their own.  Parts point into the
 * body (no copies, no allocation). */
#ifndef SEGD_HTTP_MULTIPART_H
#define SEGD_HTTP_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define SEGD_MULTIPART_BOUNDARY_MAX 70   /* RFC 2046 */
#define SEGD_MULTIPART_NAME_MAX 128
#define SEGD_MULTIPART_FILENAME_MAX 1024 /* longer names are shortened */

typedef struct segd_multipart_part {
    char name[SEGD_MULTIPART_NAME_MAX];         /* form field name, "" if none */
    /* UTF-8 text, "" when absent: filename*= (RFC 5987, UTF-8 or
     * ISO-8859-1) when present and decodable, else filename= (raw bytes,
     * or decoded when made of RFC 2047 encoded words); shortened on a
     * character boundary to SEGD_MULTIPART_FILENAME_MAX - 1 bytes */
    char filename[SEGD_MULTIPART_FILENAME_MAX];
    int has_filename;
    char content_type[SEGD_MULTIPART_NAME_MAX]; /* "" when absent */
    const uint8_t *data; /* into the body */
    size_t len;
} segd_multipart_part;

/* Extract the boundary parameter of a Content-Type value (token or quoted
 * string, 1..70 characters) into out (cap >= 71).  0 or -EINVAL. */
int segd_multipart_boundary(const char *content_type, char *out, size_t cap);

/* Same for a Content-Type of the given multipart media type (e.g.
 * "multipart/related"), compared case-insensitively. */
int segd_multipart_boundary_of(const char *content_type, const char *type, char *out, size_t cap);

/* The value of parameter key (e.g. "type" of multipart/related) of a
 * Content-Type value, unquoted, into out.  0, -ENOENT (absent, out = ""),
 * or -EINVAL (malformed, or longer than cap - 1). */
int segd_multipart_param(const char *content_type, const char *key, char *out, size_t cap);

/* Split body into parts.  Each part must carry a Content-Disposition:
 * form-data header; the preamble before the first delimiter and the
 * epilogue after the closing one are ignored.  Fills parts[0..*nparts).
 * Returns 0, -E2BIG when there are more than max_parts parts (*nparts is
 * then max_parts), or -EINVAL when the body is malformed (no delimiter, a
 * part without the header block or without its closing delimiter, header
 * lines over 8 KiB, a field name over 127 bytes, a bad quoted string).
 * A long file name is shortened, not refused. */
int segd_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                         segd_multipart_part *parts, size_t max_parts,
                         size_t *nparts);

/* Same for multipart/related: parts need no Content-Disposition (a
 * form-data one is still parsed for its name and file name); each part's
 * Content-Type is reported as sent.  Same returns. */
int segd_multipart_parse_related(const uint8_t *body, size_t len, const char *boundary,
                                 segd_multipart_part *parts, size_t max_parts, size_t *nparts);

#endif
