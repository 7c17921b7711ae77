/* libFuzzer harness: RLE (src/io/rle.h) both ways.
 *   1. The input bytes as a mask (byte & 1): encode, check the length
 *      bound of segd_rle_max_len(), decode, compare.
 *   2. The input as a NUL-terminated string: strict decode against a small
 *      image; when accepted, re-encode and decode again: same mask, and
 *      the canonical string re-encodes to itself.
 * Encoding into a buffer one byte short must report -ENOSPC. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/rle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static void mask_round_trip(const uint8_t *data, size_t n)
{
    uint8_t *mask = malloc(n ? n : 1), *back = malloc(n ? n : 1);
    size_t cap = segd_rle_max_len(n);
    char *buf = malloc(cap);
    if (!mask || !back || !buf)
        abort();
    size_t set = 0;
    for (size_t i = 0; i < n; i++)
        set += mask[i] = data[i] & 1;
    long len = segd_rle_encode(mask, n, buf, cap);
    if (len < 0 || (size_t)len + 1 > cap || strlen(buf) != (size_t)len)
        FAIL("encode of %zu pixels: %ld (cap %zu)", n, len, cap);
    long got = segd_rle_decode(buf, back, n);
    if (got != (long)set || memcmp(mask, back, n) != 0)
        FAIL("round trip of %zu pixels: %ld set, expected %zu", n, got, set);
    if (len > 0) { /* one byte short must fail cleanly, NUL-terminated */
        char *small = malloc((size_t)len);
        if (!small)
            abort();
        long r = segd_rle_encode(mask, n, small, (size_t)len);
        if (r != -ENOSPC || !memchr(small, '\0', (size_t)len))
            FAIL("encode into %ld bytes returned %ld", len, r);
        free(small);
    }
    free(buf);
    free(back);
    free(mask);
}

static void string_round_trip(const uint8_t *data, size_t size)
{
    size_t npix = 1 + (size ? data[0] * 37u : 0); /* 1 .. 9436 */
    char *s = malloc(size + 1);
    uint8_t *mask = malloc(npix), *back = malloc(npix);
    size_t cap = segd_rle_max_len(npix);
    char *buf = malloc(cap), *buf2 = malloc(cap);
    if (!s || !mask || !back || !buf || !buf2)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    long set = segd_rle_decode(s, mask, npix);
    if (set != -EINVAL && set < 0)
        FAIL("decode returned %ld", set);
    if (set >= 0) {
        size_t cnt = 0;
        for (size_t i = 0; i < npix; i++) {
            if (mask[i] > 1)
                FAIL("decoded mask byte %u", mask[i]);
            cnt += mask[i];
        }
        if (cnt != (size_t)set)
            FAIL("decode reported %ld set pixels, mask has %zu", set, cnt);
        long len = segd_rle_encode(mask, npix, buf, cap);
        if (len < 0 || segd_rle_decode(buf, back, npix) != set || memcmp(mask, back, npix))
            FAIL("re-encode of an accepted string failed");
        long len2 = segd_rle_encode(back, npix, buf2, cap);
        if (len2 != len || strcmp(buf, buf2) != 0)
            FAIL("canonical RLE is not stable");
    }
    free(buf2);
    free(buf);
    free(back);
    free(mask);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mask_round_trip(data, size);
    string_round_trip(data, size);
    return 0;
}
