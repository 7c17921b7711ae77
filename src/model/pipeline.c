/* segd pipeline: one slice through the steps of train/preprocess.py (its
 * twin: keep the two in step): decode -> normalise (minmax, percentile or
 * histogram_match) ->
 * resize to the model grid (and one copy per test-time power) -> forward
 * -> check -> sigmoid, average over the powers and resample back ->
 * threshold -> presence gate.  One function per step, all working in the
 * worker's arena: nothing here allocates.  Steps 1-3 fill one of the
 * worker's slots, step 4 runs a batch of slots, steps 5-7 read one. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "segd/engine.h"
#include "model/kernels.h"
#include "io/png.h"
#include "model/unet3p.h"
#include "model/model.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* minmax normalisation in place, exactly as preprocess.normalise. */
static void normalise(float *img, size_t n)
{
    float mn = img[0], mx = img[0];
    for (size_t i = 1; i < n; i++) {
        mn = img[i] < mn ? img[i] : mn;
        mx = img[i] > mx ? img[i] : mx;
    }
    if (!(mx > mn)) {
        memset(img, 0, n * sizeof(float));
        return;
    }
    float range = (float)((double)mx - (double)mn); /* Python float, then float32 */
    for (size_t i = 0; i < n; i++)
        img[i] = (img[i] - mn) / range;
}

/* k-th smallest of a[0..n-1] (0-based), reordering a: Wirth's version of
 * Hoare's FIND (Wirth, "Algorithms + Data Structures = Programs", 1976,
 * 2.3.4).  The order statistic is unique, so the value equals what
 * numpy.partition returns; equal keys (the black background) stop both
 * scans, which keeps the partition balanced. */
static float select_kth(float *a, size_t n, size_t k)
{
    ptrdiff_t l = 0, r = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
    while (l < r) {
        float x = a[kk];
        ptrdiff_t i = l, j = r;
        do {
            while (a[i] < x)
                i++;
            while (x < a[j])
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < kk)
            l = i;
        if (kk < i)
            r = j;
    }
    return a[kk];
}

/* Percentile clipping in place, exactly as preprocess.normalise_percentile:
 * lo/hi are the order statistics of rank floor((n-1) p_lo / 100) and
 * ceil((n-1) p_hi / 100); scratch holds n floats (a copy is reordered). */
static void normalise_percentile(float *img, size_t n, double p_lo, double p_hi, float *scratch)
{
    size_t k_lo = (size_t)floor((double)(n - 1) * p_lo / 100.0);
    size_t k_hi = (size_t)ceil((double)(n - 1) * p_hi / 100.0);
    memcpy(scratch, img, n * sizeof(float));
    float hi = select_kth(scratch, n, k_hi);
    float lo = select_kth(scratch, n, k_lo);
    if (!(hi > lo)) {
        normalise(img, n);
        return;
    }
    float range = hi - lo;
    for (size_t i = 0; i < n; i++) {
        float v = (img[i] - lo) / range;
        img[i] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
}

/* Order key of a float: unsigned comparison of keys is the order of the
 * finite floats (negatives' bits inverted, positives' sign bit set). */
static uint32_t float_key(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Indices 0..n-1 ordered by img's values, ascending: LSD radix sort on
 * float_key in three passes of 11 bits (Knuth, TAOCP vol. 3, 5.2.5),
 * O(n) and allocation-free, ping-ponging between a and b (n each).  A
 * pass whose digit is the same for every pixel (the high bits of most
 * images) is skipped.  Returns the buffer that holds the order. */
static uint32_t *order_by_value(const float *img, size_t n, uint32_t *a, uint32_t *b)
{
    enum { BITS = 11, BUCKETS = 1 << BITS, PASSES = 3 };
    uint32_t count[PASSES][BUCKETS];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < n; i++) {
        uint32_t k = float_key(img[i]);
        for (int p = 0; p < PASSES; p++)
            count[p][(k >> (p * BITS)) & (BUCKETS - 1)]++;
    }
    uint32_t *src = NULL, *dst = a;
    for (int p = 0; p < PASSES; p++) {
        uint32_t *c = count[p];
        if (c[(float_key(img[0]) >> (p * BITS)) & (BUCKETS - 1)] == n)
            continue; /* one digit for all: the order stays */
        uint32_t sum = 0;
        for (int d = 0; d < BUCKETS; d++) { /* counts -> first slots */
            uint32_t t = c[d];
            c[d] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t j = src ? src[i] : (uint32_t)i;
            dst[c[(float_key(img[j]) >> (p * BITS)) & (BUCKETS - 1)]++] = j;
        }
        src = dst;
        dst = dst == a ? b : a;
    }
    if (!src) { /* every pass skipped: all keys equal, any order is sorted */
        for (size_t i = 0; i < n; i++)
            a[i] = (uint32_t)i;
        src = a;
    }
    return src;
}

/* Histogram matching in place, exactly as preprocess.normalise_histogram
 * (Nyul, Udupa and Zhang, IEEE TMI 19(2), 2000, every percentile a
 * landmark): each pixel's mid-rank r = (#below + (#equal - 1) / 2) /
 * (n - 1), 0.5 for n == 1, mapped through the piecewise-linear curve of
 * the ref_n reference quantiles q at r = j / (ref_n - 1), in double.
 * Ranks make it blind to any increasing grey-value map (gamma, bit depth,
 * window).  The pixels are visited in value order (order_by_value): a run
 * of equal values [s, e) has #below = s and #equal = e - s, so each pixel
 * is written once, after its run is known.  scratch holds 2n uint32
 * (segd_worker_create sizes wk->prob for it); n < 2^32. */
static void normalise_histogram(float *img, size_t n, const double *q, int ref_n, uint32_t *scratch)
{
    const uint32_t *order = order_by_value(img, n, scratch, scratch + n);
    for (size_t s = 0, e; s < n; s = e) {
        float v = img[order[s]];
        for (e = s + 1; e < n && img[order[e]] == v; e++)
            ;
        double r = n > 1 ? (double)(s + e - 1) / (2.0 * (double)(n - 1)) : 0.5;
        double t = r * (double)(ref_n - 1);
        size_t j = (size_t)floor(t);
        if (j > (size_t)ref_n - 2)
            j = (size_t)ref_n - 2;
        float out = (float)(q[j] + (t - (double)j) * (q[j + 1] - q[j]));
        for (size_t k = s; k < e; k++)
            img[order[k]] = out;
    }
}

/* Index of the first non-finite value of x[0..n), or n. */
static size_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}

/* Step 2: normalise the native image in place with the model's policy. */
static void step_normalise(segd_worker *wk, size_t n)
{
    const segd_model *m = wk->m;
    switch (m->norm) {
    case SEGD_NORM_PERCENTILE:
        normalise_percentile(wk->img, n, m->pct_lo, m->pct_hi, wk->prob);
        break;
    case SEGD_NORM_HISTOGRAM:
        normalise_histogram(wk->img, n, m->ref_q, m->ref_n, (uint32_t *)wk->prob);
        break;
    default:
        normalise(wk->img, n);
    }
}

static size_t grid_px(const segd_model *m)
{
    return (size_t)m->grid_h * m->grid_w;
}

/* Slot's model input for test-time power j (wk->grid is [j][slot]). */
static float *grid_of(const segd_worker *wk, int j, int slot)
{
    return wk->grid + ((size_t)j * wk->batch + (size_t)slot) * grid_px(wk->m);
}

/* Slot's logits of test-time power j (wk->logits is [j][slot]). */
static float *logits_of(const segd_worker *wk, int j, int slot)
{
    return wk->logits + ((size_t)j * wk->batch + (size_t)slot) * wk->m->nclass * grid_px(wk->m);
}

/* Step 3: bilinear resize (align_corners=False) of the image onto slot's
 * grid, then x ** gamma_j into power j's input, as preprocess.grid_probs
 * (the resized image goes into power 0's place and is raised there last). */
static void step_to_grid(segd_worker *wk, int slot, int h, int w)
{
    const segd_model *m = wk->m;
    size_t n = grid_px(m);
    float *x = grid_of(wk, 0, slot);
    segd_resize_bilinear(x, wk->img, 1, h, w, m->grid_h, m->grid_w, NULL);
    for (int j = m->tta_n - 1; j >= 0; j--) {
        float g = m->tta_gamma[j], *dst = grid_of(wk, j, slot);
        if (g == 1.0f) {
            if (dst != x)
                memcpy(dst, x, n * sizeof(float));
            continue;
        }
        for (size_t i = 0; i < n; i++)
            dst[i] = powf(x[i], g);
    }
}

/* Step 4: the network on slots 0..n-1, once per test-time power (each a
 * batch of n): segmentation logits into wk->logits, presence logits into
 * each slot. */
static void step_forward(segd_worker *wk, int n)
{
    const segd_model *m = wk->m;
    float pres[SEGD_MAX_BATCH * SEGD_MAX_CLASSES];
    for (int j = 0; j < m->tta_n; j++) {
        segd_unet3p_forward(&m->net, logits_of(wk, j, 0), pres, grid_of(wk, j, 0), n, m->grid_h,
                            m->grid_w, wk->net_arena, wk->team, NULL);
        for (int i = 0; i < n; i++)
            memcpy(wk->slots[i].presence[j], pres + (size_t)i * m->nclass,
                   (size_t)m->nclass * sizeof(float));
    }
}

/* Step 5: refuse a non-finite output.  A NaN would otherwise turn into an
 * empty or full mask (comparisons with NaN are false) and an unencodable
 * presence value.  0, or -ERANGE (weights that overflow in float: finite at
 * load, inf or NaN after a few layers) with err naming the output. */
static int step_check_finite(const segd_worker *wk, const float *logits, const float *pres,
                             char *err, size_t errlen)
{
    const segd_model *m = wk->m;
    size_t grid = grid_px(m);
    for (int c = 0; c < m->nclass; c++) {
        size_t at = first_nonfinite(logits + (size_t)c * grid, grid);
        if (!isfinite(pres[c]) || at < grid) {
            snprintf(err, errlen, "the network produced a non-finite %s for class '%s' (%s): "
                     "the weights overflow in float", at < grid ? "segmentation logit" : "presence logit",
                     m->classes[c], at < grid ? "segmentation head" : "presence head");
            return -ERANGE;
        }
    }
    return 0;
}

/* Step 6: probabilities, the mean over the test-time powers (summed in
 * their order, then divided, as preprocess.grid_probs), resampled from the
 * grid back to h x w (wk->prob).  The slot's logits become probabilities
 * in place (power 0's holds the mean); the mean presence goes to pres. */
static void step_to_native(segd_worker *wk, int slot, float *pres, int h, int w)
{
    const segd_model *m = wk->m;
    size_t n = (size_t)m->nclass * grid_px(m);
    segd_slot *s = &wk->slots[slot];
    float *acc = logits_of(wk, 0, slot);
    for (int j = 0; j < m->tta_n; j++) {
        float *p = logits_of(wk, j, slot), *q = s->presence[j];
        segd_sigmoid(p, n);
        segd_sigmoid(q, (size_t)m->nclass);
        for (int c = 0; c < m->nclass; c++)
            pres[c] = j ? pres[c] + q[c] : q[c];
        if (j)
            for (size_t i = 0; i < n; i++)
                acc[i] += p[i];
    }
    if (m->tta_n > 1) {
        float k = (float)m->tta_n;
        for (size_t i = 0; i < n; i++)
            acc[i] /= k;
        for (int c = 0; c < m->nclass; c++)
            pres[c] /= k;
    }
    segd_resize_bilinear(wk->prob, acc, m->nclass, m->grid_h, m->grid_w, h, w, NULL);
}

/* Step 7: masks = prob > threshold, emptied where the class's presence is
 * under the model's presence threshold; the result points into the arena. */
static void step_threshold_gate(segd_worker *wk, const float *pres, int h, int w,
                                float threshold, segd_result *res)
{
    const segd_model *m = wk->m;
    size_t n = (size_t)h * w;
    memset(res, 0, sizeof *res);
    res->width = w;
    res->height = h;
    res->nclass = m->nclass;
    res->rle = wk->rle;
    res->rle_cap = wk->rle_cap;
    for (int c = 0; c < m->nclass; c++) {
        const float *p = wk->prob + (size_t)c * n;
        uint8_t *mk = wk->mask + (size_t)c * n;
        size_t cnt = 0;
        if (pres[c] < m->presence_threshold) {
            memset(mk, 0, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                mk[i] = p[i] > threshold;
                cnt += mk[i];
            }
        }
        res->presence[c] = pres[c];
        res->pixels[c] = cnt;
        res->mask[c] = mk;
        res->prob[c] = p;
    }
}

/* Steps 2-3 from the raw grey image in wk->img (h x w) into slot; t0 is
 * when step 1 began. */
static void stage(segd_worker *wk, int slot, int h, int w, double t0)
{
    segd_slot *s = &wk->slots[slot];
    step_normalise(wk, (size_t)h * w);
    step_to_grid(wk, slot, h, w);
    s->height = h;
    s->width = w;
    s->staged = 1;
    s->ran = 0;
    s->ms_decode = now_ms() - t0;
}

/* Empty slot for staging: 0, or -EINVAL (err set) outside the batch. */
static int claim_slot(segd_worker *wk, int slot, char *err, size_t errlen)
{
    if (slot < 0 || slot >= wk->batch) {
        snprintf(err, errlen, "slot %d outside the worker's batch of %d", slot, wk->batch);
        return -EINVAL;
    }
    wk->slots[slot].staged = 0;
    return 0;
}

/* Step 1 for a PNG: decode to grey floats in wk->img (wk->prob is the
 * decoder's scratch). */
int segd_worker_stage_png(segd_worker *wk, int slot, const void *png, size_t len, char *err,
                          size_t errlen)
{
    double t0 = now_ms();
    int rc = claim_slot(wk, slot, err, errlen);
    if (rc)
        return rc;
    int h, w;
    rc = segd_png_decode_gray(png, len, wk->max_pixels, wk->img, wk->prob, wk->prob_bytes,
                                  &h, &w, err, errlen);
    if (rc)
        return rc;
    stage(wk, slot, h, w, t0);
    return 0;
}

/* Step 1 for a raw image: check and copy it into wk->img. */
int segd_worker_stage_gray(segd_worker *wk, int slot, const float *img, int height, int width,
                           char *err, size_t errlen)
{
    double t0 = now_ms();
    int rc = claim_slot(wk, slot, err, errlen);
    if (rc)
        return rc;
    if (height <= 0 || width <= 0) {
        snprintf(err, errlen, "image has zero size");
        return -EDOM;
    }
    size_t n = (size_t)height * width;
    if (n > wk->max_pixels) {
        snprintf(err, errlen, "image %dx%d larger than %zu pixels", width, height,
                 wk->max_pixels);
        return -E2BIG;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(img[i])) {
            snprintf(err, errlen, "non-finite pixel at %zu", i);
            return -EDOM;
        }
    memcpy(wk->img, img, n * sizeof(float));
    stage(wk, slot, height, width, t0);
    return 0;
}

/* Step 4 over slots 0..n-1. */
int segd_worker_run(segd_worker *wk, int n)
{
    if (n < 1 || n > wk->batch)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (!wk->slots[i].staged)
            return -EINVAL;
    double t0 = now_ms();
    step_forward(wk, n);
    double share = (now_ms() - t0) / n;
    for (int i = 0; i < n; i++) {
        wk->slots[i].staged = 0;
        wk->slots[i].ran = 1;
        wk->slots[i].ms_infer = share;
    }
    return 0;
}

/* Steps 5-7 for slot; a slot gives its result once. */
int segd_worker_result(segd_worker *wk, int slot, float threshold, segd_result *res, char *err,
                       size_t errlen)
{
    double t0 = now_ms();
    if (slot < 0 || slot >= wk->batch || !wk->slots[slot].ran) {
        snprintf(err, errlen, "slot %d was not staged and run", slot);
        return -ENOENT;
    }
    segd_slot *s = &wk->slots[slot];
    const segd_model *m = wk->m;
    float pres[SEGD_MAX_CLASSES];
    s->ran = 0;
    for (int j = 0; j < m->tta_n; j++) {
        int rc = step_check_finite(wk, logits_of(wk, j, slot), s->presence[j], err, errlen);
        if (rc)
            return rc;
    }
    step_to_native(wk, slot, pres, s->height, s->width);
    step_threshold_gate(wk, pres, s->height, s->width, threshold < 0 ? m->threshold : threshold,
                        res);
    res->ms_decode = s->ms_decode;
    res->ms_infer = s->ms_infer;
    res->ms_post = now_ms() - t0;
    return 0;
}

/* One image through slot 0, once staged (rc: the stage's result): run,
 * result. */
static int run_one(segd_worker *wk, int rc, float threshold, segd_result *res, char *err,
                   size_t errlen)
{
    if (!rc)
        rc = segd_worker_run(wk, 1);
    return rc ? rc : segd_worker_result(wk, 0, threshold, res, err, errlen);
}

int segd_worker_segment_png(segd_worker *wk, const void *png, size_t len, float threshold,
                            segd_result *res, char *err, size_t errlen)
{
    return run_one(wk, segd_worker_stage_png(wk, 0, png, len, err, errlen), threshold, res, err,
                   errlen);
}

int segd_worker_segment_gray(segd_worker *wk, const float *img, int height, int width,
                             float threshold, segd_result *res, char *err, size_t errlen)
{
    return run_one(wk, segd_worker_stage_gray(wk, 0, img, height, width, err, errlen), threshold,
                   res, err, errlen);
}
