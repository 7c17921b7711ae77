/* libFuzzer harness: the whole engine path of one request,
 * segd_worker_segment_png() (PNG decode, min-max normalisation, resize to
 * the model grid, UNet3+ forward, resize back, threshold, gating), with the
 * tiny golden-w4-odd model (45x39 grid).  The first input byte picks the
 * threshold (0: the model default).  On success the result must be
 * consistent: size within the worker limit, masks 0/1 with the reported
 * pixel counts, finite probabilities in [0, 1], and every mask must survive
 * an RLE encode/decode round trip.  Even-length inputs get their chunk
 * CRCs fixed (pngfix.h). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/engine.h"
#include "io/rle.h"
#include "pngfix.h"

#define MAX_PIXELS (384u * 384u)

#ifndef SEGD_FUZZ_WEIGHTS
#define SEGD_FUZZ_WEIGHTS "tests/data/golden-w4-odd.safetensors"
#endif

static segd_model *g_model;
static segd_worker *g_worker;
static char *g_rle;
static uint8_t *g_mask;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *path = getenv("SEGD_FUZZ_WEIGHTS");
    char err[256];
    if (!path)
        path = SEGD_FUZZ_WEIGHTS;
    if (segd_model_load(path, &g_model, err, sizeof err)) {
        fprintf(stderr, "fuzz_segment: cannot load %s: %s\n", path, err);
        exit(2);
    }
    if (segd_worker_create(g_model, MAX_PIXELS, &g_worker)) {
        fprintf(stderr, "fuzz_segment: cannot create a worker\n");
        exit(2);
    }
    g_rle = malloc(segd_rle_max_len(MAX_PIXELS));
    g_mask = malloc(MAX_PIXELS);
    if (!g_rle || !g_mask)
        exit(2);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    float threshold = data[0] ? (float)data[0] / 256.0f : -1.0f;
    segd_result r;
    char err[256] = "";
    uint8_t *png = malloc(size - 1 ? size - 1 : 1);
    if (!png)
        abort();
    memcpy(png, data + 1, size - 1);
    if (size % 2 == 0)
        png_fix_crcs(png, size - 1);
    int rc = segd_worker_segment_png(g_worker, png, size - 1, threshold, &r, err, sizeof err);
    free(png); /* r points into the worker's arena, not into png */
    if (rc) {
        if (rc != -EINVAL && rc != -E2BIG && rc != -EDOM && rc != -ENOMEM) {
            fprintf(stderr, "undocumented error %d: %s\n", rc, err);
            abort();
        }
        return 0;
    }
    size_t n = (size_t)r.width * (size_t)r.height;
    if (r.width <= 0 || r.height <= 0 || n > MAX_PIXELS ||
        r.nclass != segd_model_num_classes(g_model)) {
        fprintf(stderr, "bad result header %dx%d nclass %d\n", r.width, r.height, r.nclass);
        abort();
    }
    for (int c = 0; c < r.nclass; c++) {
        size_t cnt = 0;
        for (size_t i = 0; i < n; i++) {
            if (r.mask[c][i] > 1 || !(r.prob[c][i] >= -1e-5f && r.prob[c][i] <= 1.0f + 1e-5f)) {
                fprintf(stderr, "class %d pixel %zu: mask %u prob %g\n", c, i, r.mask[c][i],
                        r.prob[c][i]);
                abort();
            }
            cnt += r.mask[c][i];
        }
        if (cnt != r.pixels[c] || !(r.presence[c] >= 0.0f && r.presence[c] <= 1.0f)) {
            fprintf(stderr, "class %d: %zu set pixels, reported %zu, presence %g\n", c, cnt,
                    r.pixels[c], r.presence[c]);
            abort();
        }
        long len = segd_rle_encode(r.mask[c], n, g_rle, segd_rle_max_len(n));
        if (len < 0 || segd_rle_decode(g_rle, g_mask, n) != (long)cnt ||
            memcmp(g_mask, r.mask[c], n) != 0) {
            fprintf(stderr, "class %d: RLE round trip failed\n", c);
            abort();
        }
    }
    json_t *doc = segd_result_json(g_model, &r, "fuzz");
    if (!doc) {
        fprintf(stderr, "segd_result_json failed\n");
        abort();
    }
    json_decref(doc);
    return 0;
}
