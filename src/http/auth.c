/* API keys (see auth.h): loaded once, kept as SHA-256 digests, checked in
 * constant time. */
#include "http/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io/sha256.h"

#define KEY_MIN 16
#define KEY_MAX 512

struct segd_keys {
    size_t n;
    char (*digest)[65]; /* hex SHA-256 of each key */
};

/* RFC 6750 token68: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool token68(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
                     strchr("-._~+/", s[i]) != NULL) && s[i])
        i++;
    if (i == 0)
        return false;
    while (i < n && s[i] == '=')
        i++;
    return i == n;
}

int segd_auth_load(const char *path, segd_keys **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    segd_keys *k = calloc(1, sizeof *k);
    FILE *f = fopen(path, "r");
    if (!k || !f) {
        rc = k ? -errno : -ENOMEM;
        snprintf(err, errlen, "--api-key-file %s: %s", path, strerror(-rc));
        goto out;
    }
    size_t kcap = 0;
    for (unsigned lineno = 1;; lineno++) {
        errno = 0;
        ssize_t len = getline(&line, &cap, f);
        if (len < 0) {
            if (errno) {
                rc = -errno;
                snprintf(err, errlen, "--api-key-file %s: %s", path, strerror(errno));
                goto out;
            }
            break;
        }
        char *s = line, *e = line + len;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (s == e || *s == '#')
            continue;
        size_t n = (size_t)(e - s);
        if (n < KEY_MIN || n > KEY_MAX || !token68(s, n)) {
            rc = -EINVAL;
            snprintf(err, errlen, "--api-key-file %s, line %u: a key is %d to %d characters of "
                                  "A-Z a-z 0-9 - . _ ~ + / (then = padding)", path, lineno,
                     KEY_MIN, KEY_MAX);
            goto out;
        }
        if (k->n == kcap) {
            size_t nc = kcap ? 2 * kcap : 4;
            char(*d)[65] = realloc(k->digest, nc * sizeof *d);
            if (!d) {
                rc = -ENOMEM;
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            k->digest = d;
            kcap = nc;
        }
        segd_sha256_hex(s, n, k->digest[k->n++]);
        memset(s, 0, n); /* the key itself is not kept */
    }
    if (k->n == 0) {
        rc = -EINVAL;
        snprintf(err, errlen, "--api-key-file %s holds no key", path);
        goto out;
    }
    *out = k;
    k = NULL;
out:
    if (line)
        memset(line, 0, cap);
    free(line);
    if (f)
        fclose(f);
    segd_auth_free(k);
    return rc;
}

size_t segd_auth_count(const segd_keys *k) { return k ? k->n : 0; }

bool segd_auth_check(const segd_keys *k, const char *authorization)
{
    if (!k || !authorization)
        return false;
    const char *p = authorization;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return false;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n > KEY_MAX || !token68(p, n))
        return false;
    char digest[65];
    segd_sha256_hex(p, n, digest);
    /* every key, every byte: no early exit on a match or a mismatch */
    unsigned match = 0;
    for (size_t i = 0; i < k->n; i++) {
        unsigned diff = 0;
        for (size_t b = 0; b < 64; b++)
            diff |= (unsigned)(unsigned char)(digest[b] ^ k->digest[i][b]);
        match |= (unsigned)(diff == 0);
    }
    return match != 0;
}

void segd_auth_free(segd_keys *k)
{
    if (!k)
        return;
    if (k->digest)
        memset(k->digest, 0, k->n * sizeof *k->digest);
    free(k->digest);
    free(k);
}
