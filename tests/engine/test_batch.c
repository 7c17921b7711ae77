/* Batched forward (segd_worker_stage_* / _run / _result): n images in one
 * pass give the masks, probabilities and presence of n single passes, bit
 * for bit, whatever their native sizes, the batch's fill (n < batch) and
 * the order of the slots; the slot protocol's errors.
 * Arguments: WEIGHTS DATA_DIR (tests/data).  $SEGD_GEMM / $SEGD_PRECISION
 * select the kernels, as for segd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "segd/engine.h"

#define NIMG 4

static const char *names[NIMG] = {
    "case101_day20_slice_0090_266_266_1.50_1.50.png",
    "case110_day16_slice_0070_360_310_1.50_1.50.png",
    "synthetic-37x53-grey16.png",
    "synthetic-37x53-grey8.png",
};

static unsigned char *png[NIMG];
static size_t png_len[NIMG];

/* What one image gives on its own: masks and probabilities copied. */
typedef struct single {
    int w, h, nclass;
    float presence[SEGD_MAX_CLASSES];
    size_t pixels[SEGD_MAX_CLASSES];
    unsigned char *mask;
    float *prob;
} single;

static single ref[NIMG];

static void slurp(const char *dir, int i)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    TEST_REQUIRE(f);
    fseek(f, 0, SEEK_END);
    png_len[i] = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    png[i] = malloc(png_len[i]);
    TEST_REQUIRE(png[i] && fread(png[i], 1, png_len[i], f) == png_len[i]);
    fclose(f);
}

static void keep(single *s, const segd_result *r)
{
    size_t n = (size_t)r->width * r->height;
    s->w = r->width;
    s->h = r->height;
    s->nclass = r->nclass;
    s->mask = malloc(n * r->nclass);
    s->prob = malloc(n * r->nclass * sizeof(float));
    TEST_REQUIRE(s->mask && s->prob);
    for (int c = 0; c < r->nclass; c++) {
        s->presence[c] = r->presence[c];
        s->pixels[c] = r->pixels[c];
        memcpy(s->mask + c * n, r->mask[c], n);
        memcpy(s->prob + c * n, r->prob[c], n * sizeof(float));
    }
}

/* r (image i from a batch) equals ref[i] bit for bit. */
static int same(int i, const segd_result *r)
{
    const single *s = &ref[i];
    if (r->width != s->w || r->height != s->h || r->nclass != s->nclass)
        return 0;
    size_t n = (size_t)s->w * s->h;
    for (int c = 0; c < s->nclass; c++)
        if (memcmp(&r->presence[c], &s->presence[c], sizeof(float)) ||
            r->pixels[c] != s->pixels[c] || memcmp(r->mask[c], s->mask + c * n, n) ||
            memcmp(r->prob[c], s->prob + c * n, n * sizeof(float)))
            return 0;
    return 1;
}

/* Stage order[0..n-1] into slots 0..n-1, run, compare every result. */
static void check_batch(segd_worker *w, const int *order, int n)
{
    char err[256];
    segd_result r;
    for (int k = 0; k < n; k++)
        TEST_EQ_INT(segd_worker_stage_png(w, k, png[order[k]], png_len[order[k]], err, sizeof err),
                    0);
    TEST_EQ_INT(segd_worker_run(w, n), 0);
    for (int k = n - 1; k >= 0; k--) { /* any order */
        TEST_EQ_INT(segd_worker_result(w, k, -1, &r, err, sizeof err), 0);
        TEST_CHECK(same(order[k], &r));
        TEST_CHECK(r.ms_infer > 0);
    }
}

static void check_protocol(segd_worker *w)
{
    char err[256];
    segd_result r;
    TEST_EQ_INT(segd_worker_batch(w), NIMG);
    TEST_EQ_INT(segd_worker_stage_png(w, NIMG, png[0], png_len[0], err, sizeof err), -EINVAL);
    TEST_EQ_INT(segd_worker_stage_png(w, -1, png[0], png_len[0], err, sizeof err), -EINVAL);
    TEST_EQ_INT(segd_worker_run(w, 0), -EINVAL);
    TEST_EQ_INT(segd_worker_run(w, NIMG + 1), -EINVAL);
    /* slot 1 not staged */
    TEST_EQ_INT(segd_worker_stage_png(w, 0, png[0], png_len[0], err, sizeof err), 0);
    TEST_EQ_INT(segd_worker_run(w, 2), -EINVAL);
    TEST_EQ_INT(segd_worker_run(w, 1), 0);
    TEST_EQ_INT(segd_worker_result(w, 1, -1, &r, err, sizeof err), -ENOENT);
    TEST_EQ_INT(segd_worker_result(w, 0, -1, &r, err, sizeof err), 0);
    TEST_CHECK(same(0, &r));
    /* a slot gives its result once */
    TEST_EQ_INT(segd_worker_result(w, 0, -1, &r, err, sizeof err), -ENOENT);
    /* a failed stage empties the slot */
    TEST_EQ_INT(segd_worker_stage_png(w, 0, png[0], png_len[0], err, sizeof err), 0);
    TEST_EQ_INT(segd_worker_stage_png(w, 0, "garbage", 7, err, sizeof err), -EINVAL);
    TEST_EQ_INT(segd_worker_run(w, 1), -EINVAL);
}

int main(int argc, char **argv)
{
    TEST_REQUIRE(argc == 3);
    char err[512];
    for (int i = 0; i < NIMG; i++)
        slurp(argv[2], i);
    const char *gemm = getenv("SEGD_GEMM"), *prec = getenv("SEGD_PRECISION");
    segd_model_options opts = {.gemm = gemm, .precision = prec};
    segd_model *m;
    if (segd_model_load_opts(argv[1], &opts, &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("kernel %s, precision %s\n", segd_model_kernel(m), segd_model_precision(m));
    int native = strncmp(segd_model_kernel(m), "native", 6) == 0;
    for (int threads = 1; threads <= 2; threads++) {
        segd_worker *one, *w;
        TEST_REQUIRE(segd_worker_create_threads(m, SEGD_DEFAULT_MAX_PIXELS, threads, &one) == 0);
        TEST_REQUIRE(segd_worker_create_batch(m, SEGD_DEFAULT_MAX_PIXELS, threads, NIMG, &w) == 0);
        TEST_EQ_INT(segd_worker_batch(one), 1);
        TEST_CHECK(segd_worker_arena_bytes(w) > segd_worker_arena_bytes(one));
        segd_result r;
        for (int i = 0; i < NIMG; i++) {
            TEST_REQUIRE(segd_worker_segment_png(one, png[i], png_len[i], -1, &r, err,
                                                 sizeof err) == 0);
            /* the native kernels give the same numbers whatever the team's
             * split of the bands; OpenBLAS's sums may depend on the shape
             * of the call, so its reference is per team size */
            if (threads > 1 && native)
                TEST_CHECK(same(i, &r));
            if (threads == 1 || !native) {
                free(ref[i].mask);
                free(ref[i].prob);
                keep(&ref[i], &r);
            }
        }
        int all[NIMG] = {0, 1, 2, 3}, rev[NIMG] = {3, 2, 1, 0}, part[3] = {1, 3, 1};
        check_batch(w, all, NIMG);
        check_batch(w, rev, NIMG);
        check_batch(w, part, 3);
        /* single-image calls on a batch worker */
        TEST_REQUIRE(segd_worker_segment_png(w, png[1], png_len[1], -1, &r, err, sizeof err) == 0);
        TEST_CHECK(same(1, &r));
        check_protocol(w);
        segd_worker *bad;
        TEST_EQ_INT(segd_worker_create_batch(m, 1000, 1, 0, &bad), -EINVAL);
        TEST_EQ_INT(segd_worker_create_batch(m, 1000, 1, SEGD_MAX_BATCH + 1, &bad), -EINVAL);
        TEST_CHECK(bad == NULL);
        segd_worker_free(one);
        segd_worker_free(w);
    }
    for (int i = 0; i < NIMG; i++) {
        free(ref[i].mask);
        free(ref[i].prob);
        free(png[i]);
    }
    segd_model_free(m);
    return test_report("test_batch");
}
