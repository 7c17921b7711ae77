/* API keys of `segd serve --api-key-file`: loaded once, kept only as
 * SHA-256 digests, and a request's "Authorization: Bearer <key>" compared
 * with every one of them in constant time. */
#ifndef SEGD_HTTP_AUTH_H
#define SEGD_HTTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

typedef struct segd_keys segd_keys;

/* Read the key file: one key per line, surrounding spaces and tabs
 * trimmed, empty lines and lines starting with '#' ignored.  A key is 16
 * to 512 characters of the RFC 6750 token68 alphabet
 * ([A-Za-z0-9._~+/-], then '=' padding).  0 with *out set, or -errno of
 * opening/reading the file, -EINVAL (a bad key, named by line number, or
 * no key at all), -ENOMEM; err says which. */
int segd_auth_load(const char *path, segd_keys **out, char *err, size_t errlen);

/* Number of keys loaded. */
size_t segd_auth_count(const segd_keys *k);

/* 1 when authorization (an Authorization header value, NULL when absent)
 * is "Bearer <token>" (scheme case-insensitive) and token is one of the
 * keys.  The token's digest is compared with every key's digest whatever
 * the outcome, each comparison in constant time, so the answer's timing
 * does not tell how much of a key matched or which. */
bool segd_auth_check(const segd_keys *k, const char *authorization);

void segd_auth_free(segd_keys *k); /* NULL is fine */

#endif
