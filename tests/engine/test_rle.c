/* RLE: round trips on random masks, edge cases, strict decoding, and real
 * rows of the Kaggle train.csv (tests/data/rle-train-sample.csv). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "io/rle.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static void round_trip(const uint8_t *m, size_t n)
{
    size_t cap = segd_rle_max_len(n);
    char *buf = malloc(cap);
    uint8_t *back = malloc(n ? n : 1);
    TEST_REQUIRE(buf && back);
    long len = segd_rle_encode(m, n, buf, cap);
    TEST_CHECK(len >= 0 && (size_t)len < cap && strlen(buf) == (size_t)len);
    size_t set = 0;
    for (size_t i = 0; i < n; i++)
        set += m[i] != 0;
    TEST_EQ_INT(segd_rle_decode(buf, back, n), (long)set);
    int same = 1;
    for (size_t i = 0; i < n; i++)
        same &= (m[i] != 0) == back[i];
    TEST_CHECK(same);
    free(buf);
    free(back);
}

static void test_random(void)
{
    for (int t = 0; t < 200; t++) {
        size_t n = 1 + rnd() % 5000;
        uint8_t *m = malloc(n);
        TEST_REQUIRE(m);
        unsigned density = rnd() % 101;
        for (size_t i = 0; i < n; i++)
            m[i] = (rnd() % 100) < density ? (uint8_t)(1 + rnd() % 255) : 0;
        round_trip(m, n);
        free(m);
    }
    /* worst case: alternating pixels must fit segd_rle_max_len exactly */
    for (size_t n = 1; n < 300; n++) {
        uint8_t *m = malloc(n);
        TEST_REQUIRE(m);
        for (size_t i = 0; i < n; i++)
            m[i] = (i % 2) == 0;
        round_trip(m, n);
        free(m);
    }
}

static void test_edges(void)
{
    uint8_t m[12] = {0};
    char buf[64];
    TEST_EQ_INT(segd_rle_encode(m, 12, buf, sizeof buf), 0);
    TEST_EQ_STR(buf, "");
    memset(m, 1, 12);
    segd_rle_encode(m, 12, buf, sizeof buf);
    TEST_EQ_STR(buf, "1 12");
    memset(m, 0, 12);
    m[0] = 1;
    segd_rle_encode(m, 12, buf, sizeof buf);
    TEST_EQ_STR(buf, "1 1");
    m[0] = 0;
    m[11] = 1;
    segd_rle_encode(m, 12, buf, sizeof buf);
    TEST_EQ_STR(buf, "12 1");
    m[0] = m[1] = m[5] = 1;
    segd_rle_encode(m, 12, buf, sizeof buf);
    TEST_EQ_STR(buf, "1 2 6 1 12 1");
    /* too small a buffer */
    TEST_EQ_INT(segd_rle_encode(m, 12, buf, 5), -ENOSPC);
    TEST_CHECK(strlen(buf) < 5);
    TEST_EQ_INT(segd_rle_encode(m, 12, buf, 0), -ENOSPC);
    TEST_EQ_INT(segd_rle_encode(m, 12, buf, 13), 12);

    uint8_t d[12];
    TEST_EQ_INT(segd_rle_decode("", d, 12), 0);
    TEST_EQ_INT(segd_rle_decode("  \n", d, 12), 0);
    TEST_EQ_INT(segd_rle_decode("1 12", d, 12), 12);
    TEST_EQ_INT(segd_rle_decode(" 3 2\t7 1 ", d, 12), 3);
    TEST_CHECK(d[2] && d[3] && d[6] && !d[4] && !d[1]);
    static const char *bad[] = {
        "1",        /* odd count */
        "1 2 3",    /* odd count */
        "0 1",      /* start is 1-based */
        "1 0",      /* empty run */
        "12 2",     /* past the end */
        "13 1",     /* past the end */
        "5 3 6 1",  /* overlap */
        "6 1 1 1",  /* not increasing */
        "1 2x",     /* garbage */
        "-1 2",     /* sign */
        "1,2",      /* separator */
        "a b",
        "99999999999999999999999 1", /* overflow */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long r = segd_rle_decode(bad[i], d, 12);
        if (r != -EINVAL)
            fprintf(stderr, "decode accepted \"%s\"\n", bad[i]);
        TEST_EQ_INT(r, -EINVAL);
    }
}

/* Real train.csv rows: decode, compare the pixel count with numpy's, and
 * re-encode to the identical string. */
static void test_train_rows(const char *path)
{
    FILE *f = fopen(path, "r");
    TEST_REQUIRE(f);
    static char line[1 << 16];
    int rows = 0, nonempty = 0;
    TEST_REQUIRE(fgets(line, sizeof line, f)); /* header */
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *id = strtok(line, ","), *cls = strtok(NULL, ","), *hs = strtok(NULL, ","),
             *ws = strtok(NULL, ","), *ps = strtok(NULL, ",");
        char *rle = ps ? ps + strlen(ps) + 1 : NULL;
        TEST_REQUIRE(id && cls && hs && ws && ps && rle);
        size_t n = (size_t)atol(hs) * (size_t)atol(ws);
        long pixels = atol(ps);
        uint8_t *m = malloc(n);
        size_t cap = segd_rle_max_len(n);
        char *buf = malloc(cap);
        TEST_REQUIRE(m && buf);
        long got = segd_rle_decode(rle, m, n);
        if (got != pixels)
            fprintf(stderr, "%s %s: decoded %ld pixels, numpy %ld\n", id, cls, got, pixels);
        TEST_EQ_INT(got, pixels);
        TEST_CHECK(segd_rle_encode(m, n, buf, cap) >= 0);
        if (strcmp(buf, rle) != 0)
            fprintf(stderr, "%s %s: re-encoded RLE differs\n", id, cls);
        TEST_EQ_STR(buf, rle);
        rows++;
        nonempty += pixels > 0;
        free(m);
        free(buf);
    }
    fclose(f);
    fprintf(stderr, "train.csv sample: %d rows, %d non-empty\n", rows, nonempty);
    TEST_CHECK(rows >= 30 && nonempty >= 20);
}

int main(int argc, char **argv)
{
    TEST_REQUIRE(argc == 2);
    test_random();
    test_edges();
    test_train_rows(argv[1]);
    return test_report("test_rle");
}
