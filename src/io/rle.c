/* Kaggle UW-Madison RLE: encoder into caller storage and a strict decoder. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "io/rle.h"

/* Decimal digits of n (n >= 0). */
static size_t ndigits(size_t n)
{
    size_t d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

size_t segd_rle_max_len(size_t npix)
{
    /* At most ceil(npix/2) runs; each "start len " is at most
     * digits(npix) + 1 + digits(npix) + 1 bytes (start <= npix, len <= npix). */
    size_t runs = (npix + 1) / 2;
    return runs * (2 * ndigits(npix) + 2) + 1;
}

/* Append the decimal form of v at buf[*pos]; 0 or -ENOSPC. */
static int put_num(char *buf, size_t cap, size_t *pos, size_t v, char sep)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%zu", v);
    size_t need = (size_t)n + (sep ? 1 : 0);
    if (*pos + need + 1 > cap)
        return -ENOSPC;
    if (sep)
        buf[(*pos)++] = sep;
    memcpy(buf + *pos, tmp, (size_t)n);
    *pos += (size_t)n;
    return 0;
}

long segd_rle_encode(const uint8_t *mask, size_t npix, char *buf, size_t cap)
{
    size_t pos = 0;
    if (cap == 0)
        return -ENOSPC;
    buf[0] = '\0';
    size_t i = 0;
    while (i < npix) {
        if (!mask[i]) {
            i++;
            continue;
        }
        size_t s = i;
        while (i < npix && mask[i])
            i++;
        if (put_num(buf, cap, &pos, s + 1, pos ? ' ' : 0) ||
            put_num(buf, cap, &pos, i - s, ' ')) {
            buf[pos] = '\0';
            return -ENOSPC;
        }
    }
    buf[pos] = '\0';
    return (long)pos;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Parse one unsigned decimal at *p (after skipping whitespace) into *v.
 * 1 if a number was read, 0 at end of string, -EINVAL on garbage/overflow. */
static int next_num(const char **p, size_t *v)
{
    const char *s = *p;
    while (is_space(*s))
        s++;
    if (*s == '\0') {
        *p = s;
        return 0;
    }
    if (*s < '0' || *s > '9')
        return -EINVAL;
    size_t x = 0;
    while (*s >= '0' && *s <= '9') {
        size_t d = (size_t)(*s - '0');
        if (x > (SIZE_MAX - d) / 10)
            return -EINVAL;
        x = x * 10 + d;
        s++;
    }
    if (*s != '\0' && !is_space(*s))
        return -EINVAL;
    *v = x;
    *p = s;
    return 1;
}

long segd_rle_decode(const char *rle, uint8_t *mask, size_t npix)
{
    if (npix > LONG_MAX)
        return -EINVAL;
    memset(mask, 0, npix);
    const char *p = rle;
    size_t end_prev = 0; /* 0-based index one past the previous run */
    size_t total = 0;
    for (;;) {
        size_t start, len;
        int r = next_num(&p, &start);
        if (r < 0)
            return -EINVAL;
        if (r == 0)
            break;
        r = next_num(&p, &len);
        if (r <= 0) /* odd count or garbage */
            return -EINVAL;
        if (start < 1 || len < 1 || start - 1 < end_prev || start - 1 > npix ||
            len > npix - (start - 1))
            return -EINVAL;
        memset(mask + start - 1, 1, len);
        end_prev = start - 1 + len;
        total += len;
    }
    return (long)total;
}
