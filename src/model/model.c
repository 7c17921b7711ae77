/* segd engine: model loading (metadata + UNet3+ weights), per-thread workers
 * with one pre-touched arena, the preprocess -> forward -> postprocess
 * pipeline of train/preprocess.py, and the response document. */
#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "segd/engine.h"
#include "segd/kernels.h"
#include "segd/png.h"
#include "segd/rle.h"
#include "segd/unet3p.h"
#include "segd/weights.h"
#include "model/team.h"

#define SEGD_FORMAT "segd-unet3p-v1"
#define GRID_MAX 4096

struct segd_model {
    segd_unet3p net;
    char *path;
    char name[64];
    char sha256[65];
    int data_verified;  /* tensor_sha256 checked at load (0: old file without it) */
    int grid_h, grid_w;
    int nclass;
    char classes[SEGD_MAX_CLASSES][32];
    float threshold, presence_threshold, bn_eps;
    int norm_percentile;         /* 0: minmax; 1: percentile clipping */
    double pct_lo, pct_hi;       /* percentiles, 0 <= lo < hi <= 100 */
    json_t *info; /* metadata with nested JSON parsed, + sha256/name/path */
};

struct segd_worker {
    const segd_model *m;
    size_t max_pixels;
    unsigned char *arena;
    size_t arena_bytes;
    float *img;       /* (max_pixels) native grey, normalised in place */
    float *prob;      /* (nclass, max_pixels); also the PNG decode scratch */
    size_t prob_bytes;
    uint8_t *mask;    /* (nclass, max_pixels) */
    float *grid;      /* (1, gh, gw) model input */
    float *logits;    /* (nclass, gh, gw) */
    float *net_arena; /* segd_unet3p_arena_floats */
    segd_team *team;  /* NULL: single-threaded */
    int threads;
};

/* ------------------------------------------------------------ metadata */

static int parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double lo, double hi, float *out)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= lo && v <= hi))
        return -EINVAL;
    *out = (float)v;
    return 0;
}

/* preprocess.percentiles: [lo, hi] numbers; absent means [1, 99]. */
static int parse_percentiles(const json_t *pp, segd_model *m)
{
    const json_t *pc = json_object_get(pp, "percentiles");
    m->norm_percentile = 1;
    m->pct_lo = 1;
    m->pct_hi = 99;
    if (!pc)
        return 0;
    if (!json_is_array(pc) || json_array_size(pc) != 2 ||
        !json_is_number(json_array_get(pc, 0)) || !json_is_number(json_array_get(pc, 1)))
        return -EINVAL;
    m->pct_lo = json_number_value(json_array_get(pc, 0));
    m->pct_hi = json_number_value(json_array_get(pc, 1));
    return m->pct_lo >= 0 && m->pct_lo < m->pct_hi && m->pct_hi <= 100 ? 0 : -EINVAL;
}

/* Read every metadata field the engine depends on into m. */
static int read_metadata(segd_model *m, const segd_weights *wt, long *width, long *in_ch,
                         char *err, size_t errlen)
{
    const char *fmt = segd_weights_meta(wt, "format");
    if (!fmt || strcmp(fmt, SEGD_FORMAT) != 0) {
        snprintf(err, errlen, "metadata format '%s', expected '%s'", fmt ? fmt : "(missing)",
                 SEGD_FORMAT);
        return -EINVAL;
    }
    const char *arch = segd_weights_meta(wt, "architecture");
    if (arch && strcmp(arch, "unet3plus") != 0) {
        snprintf(err, errlen, "metadata architecture '%s', expected 'unet3plus'", arch);
        return -EINVAL;
    }
    if (parse_int(segd_weights_meta(wt, "width"), 1, 1024, width)) {
        snprintf(err, errlen, "metadata width missing or invalid");
        return -EINVAL;
    }
    const char *ic = segd_weights_meta(wt, "in_channels");
    *in_ch = 1;
    if (ic && parse_int(ic, 1, 1, in_ch)) {
        snprintf(err, errlen, "metadata in_channels '%s' unsupported (only 1)", ic);
        return -EINVAL;
    }
    m->threshold = m->presence_threshold = 0.5f;
    m->bn_eps = 1e-5f;
    const char *s;
    if ((s = segd_weights_meta(wt, "threshold")) && parse_float(s, 0, 1, &m->threshold)) {
        snprintf(err, errlen, "metadata threshold '%s' invalid", s);
        return -EINVAL;
    }
    if ((s = segd_weights_meta(wt, "presence_threshold")) &&
        parse_float(s, 0, 1, &m->presence_threshold)) {
        snprintf(err, errlen, "metadata presence_threshold '%s' invalid", s);
        return -EINVAL;
    }
    if ((s = segd_weights_meta(wt, "bn_eps")) && parse_float(s, 1e-30, 1, &m->bn_eps)) {
        snprintf(err, errlen, "metadata bn_eps '%s' invalid", s);
        return -EINVAL;
    }
    json_t *cls = json_loads(segd_weights_meta(wt, "classes") ? segd_weights_meta(wt, "classes")
                                                               : "",
                             0, NULL);
    int rc = 0;
    if (!json_is_array(cls) || json_array_size(cls) < 1 ||
        json_array_size(cls) > SEGD_MAX_CLASSES) {
        snprintf(err, errlen, "metadata classes must be a JSON list of 1..%d names",
                 SEGD_MAX_CLASSES);
        rc = -EINVAL;
        goto out;
    }
    m->nclass = (int)json_array_size(cls);
    for (int c = 0; c < m->nclass; c++) {
        const char *n = json_string_value(json_array_get(cls, c));
        if (!n || !*n || strlen(n) >= sizeof m->classes[c]) {
            snprintf(err, errlen, "metadata classes[%d] invalid", c);
            rc = -EINVAL;
            goto out;
        }
        strcpy(m->classes[c], n);
    }
    json_decref(cls);
    cls = NULL;

    json_t *pp = json_loads(segd_weights_meta(wt, "preprocess") ? segd_weights_meta(wt, "preprocess")
                                                                 : "",
                            0, NULL);
    json_t *sz = json_object_get(pp, "input_size");
    const char *norm = json_string_value(json_object_get(pp, "normalisation"));
    const char *lum = json_string_value(json_object_get(pp, "luminance"));
    const char *rsz = json_string_value(json_object_get(pp, "resize"));
    if (!json_is_object(pp) || !json_is_array(sz) || json_array_size(sz) != 2 ||
        !json_is_integer(json_array_get(sz, 0)) || !json_is_integer(json_array_get(sz, 1))) {
        snprintf(err, errlen, "metadata preprocess.input_size missing or invalid");
        rc = -EINVAL;
    } else if ((norm && strcmp(norm, "minmax") && strcmp(norm, "percentile")) ||
               (lum && strcmp(lum, "bt601")) ||
               (rsz && strcmp(rsz, "bilinear-align_corners-false"))) {
        snprintf(err, errlen, "metadata preprocess policy unsupported");
        rc = -EINVAL;
    } else if (norm && !strcmp(norm, "percentile") && parse_percentiles(pp, m)) {
        snprintf(err, errlen, "metadata preprocess.percentiles must be [lo, hi] with "
                              "0 <= lo < hi <= 100");
        rc = -EINVAL;
    } else {
        json_int_t gh = json_integer_value(json_array_get(sz, 0));
        json_int_t gw = json_integer_value(json_array_get(sz, 1));
        if (gh < 1 || gw < 1 || gh > GRID_MAX || gw > GRID_MAX) {
            snprintf(err, errlen, "metadata preprocess.input_size [%lld, %lld] out of range",
                     (long long)gh, (long long)gw);
            rc = -EINVAL;
        }
        m->grid_h = (int)gh;
        m->grid_w = (int)gw;
    }
    json_decref(pp);
out:
    json_decref(cls);
    return rc;
}

/* Metadata as JSON with nested JSON strings parsed, plus identity fields.
 * NULL on OOM or on a '['/'{' value that does not parse: every step is
 * checked, since a half-built document would be served as /v1/model (a
 * value left a string, a key missing). */
static json_t *build_info(const segd_model *m, const segd_weights *wt)
{
    json_t *info = json_object();
    if (!info)
        return NULL;
    const char *k;
    json_t *v;
    json_object_foreach(segd_weights_metadata(wt), k, v) {
        const char *s = json_string_value(v);
        json_t *parsed = NULL;
        if (s && (s[0] == '[' || s[0] == '{')) {
            /* A failed parse is refused, not served as a string: jansson
             * does not reliably tell out of memory from bad syntax, and the
             * exporter writes these values as JSON. */
            parsed = json_loads(s, 0, NULL);
            if (!parsed)
                goto oom;
        }
        if (json_object_set_new(info, k, parsed ? parsed : json_string(s)))
            goto oom;
    }
    /* path: the file name only; the absolute path tells a client about the
     * server's file system and nothing about the model */
    const char *slash = strrchr(m->path, '/');
    if (json_object_set_new(info, "sha256", json_string(m->sha256)) ||
        json_object_set_new(info, "name", json_string(m->name)) ||
        json_object_set_new(info, "path", json_string(slash ? slash + 1 : m->path)))
        goto oom;
    return info;
oom:
    json_decref(info);
    return NULL;
}

int segd_model_load(const char *path, segd_model **out, char *err, size_t errlen)
{
    return segd_model_load_opts(path, NULL, out, err, errlen);
}

int segd_model_load_opts(const char *path, const segd_model_options *opts, segd_model **out,
                         char *err, size_t errlen)
{
    static const segd_model_options defaults = {0};
    if (!opts)
        opts = &defaults;
    *out = NULL;
    segd_weights *wt = NULL;
    segd_model *m = calloc(1, sizeof *m);
    int rc;
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if ((rc = segd_weights_open(path, &wt, err, errlen)))
        goto fail;
    long width, in_ch;
    if ((rc = read_metadata(m, wt, &width, &in_ch, err, errlen)))
        goto fail;
    if ((rc = segd_unet3p_load(&m->net, wt, (int)width, (int)in_ch, m->nclass, m->bn_eps,
                               opts->no_avx2, err, errlen)))
        goto fail;
    const char *gemm = opts->gemm;
    if (gemm && *gemm && (rc = segd_model_set_gemm(m, gemm))) {
        if (rc == -EINVAL)
            snprintf(err, errlen, "GEMM backend '%s' invalid: expected native, openblas or auto",
                     gemm);
        else
            snprintf(err, errlen, "out of memory for the OpenBLAS weights");
        goto fail;
    }
    const char *name = segd_weights_meta(wt, "name");
    if (name && *name && strlen(name) < sizeof m->name)
        strcpy(m->name, name);
    else
        snprintf(m->name, sizeof m->name, "unet3p-%ld", width);
    memcpy(m->sha256, segd_weights_sha256(wt), sizeof m->sha256);
    m->data_verified = segd_weights_data_verified(wt);
    m->path = strdup(path);
    m->info = m->path ? build_info(m, wt) : NULL;
    if (!m->info) {
        snprintf(err, errlen, "out of memory (or a metadata value that starts like JSON and is not)");
        rc = -ENOMEM;
        goto fail;
    }
    segd_weights_close(wt); /* everything needed is folded into net.block */
    *out = m;
    return 0;
fail:
    segd_weights_close(wt);
    segd_model_free(m);
    return rc;
}

void segd_model_free(segd_model *m)
{
    if (!m)
        return;
    json_decref(m->info);
    free(m->path);
    segd_unet3p_finalize(&m->net);
    free(m);
}

int segd_model_set_gemm(segd_model *m, const char *name)
{
    segd_gemm g;
    if (segd_gemm_parse(name, &g))
        return -EINVAL;
    return segd_unet3p_set_gemm(&m->net, g);
}

const char *segd_model_gemm(const segd_model *m) { return segd_gemm_name(m->net.gemm); }
const char *segd_model_name(const segd_model *m) { return m->name; }
const char *segd_model_sha256(const segd_model *m) { return m->sha256; }
const char *segd_model_path(const segd_model *m) { return m->path; }
int segd_model_width(const segd_model *m) { return m->net.width; }
int segd_model_num_classes(const segd_model *m) { return m->nclass; }
float segd_model_threshold(const segd_model *m) { return m->threshold; }

int segd_model_data_verified(const segd_model *m) { return m->data_verified; }

/* The grammar is checked before strtod(), which would also take a sign,
 * leading spaces, hex floats, "inf" and "nan": the CLI and the server once
 * disagreed on exactly those. */
int segd_threshold_parse(const char *s, float *out)
{
    if (!s)
        return -EINVAL;
    const char *p = s;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            digits++;
    if (digits == 0)
        return -EINVAL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return -EINVAL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end != p || !(v > 0.0 && v < 1.0))
        return -EINVAL; /* an underflow to 0 lands here too */
    float f = (float)v;
    if (!(f > 0.0f && f < 1.0f))
        return -EINVAL; /* 0.99999999 rounds to 1.0f */
    *out = f;
    return 0;
}

const char *segd_model_class_name(const segd_model *m, int c)
{
    return c >= 0 && c < m->nclass ? m->classes[c] : NULL;
}

void segd_model_grid(const segd_model *m, int *height, int *width)
{
    *height = m->grid_h;
    *width = m->grid_w;
}

double segd_model_flops(const segd_model *m)
{
    return segd_unet3p_flops(&m->net, m->grid_h, m->grid_w);
}

json_t *segd_model_info_json(const segd_model *m)
{
    return json_deep_copy(m->info);
}

/* -------------------------------------------------------------- workers */

#define ALIGN_UP(x) (((x) + 63) & ~(size_t)63)

int segd_worker_create(const segd_model *m, size_t max_pixels, segd_worker **out)
{
    return segd_worker_create_threads(m, max_pixels, 1, out);
}

int segd_worker_create_threads(const segd_model *m, size_t max_pixels, int threads,
                               segd_worker **out)
{
    *out = NULL;
    if (max_pixels == 0 || max_pixels > ((size_t)1 << 28) || threads < 1 || threads > 256)
        return -EINVAL;
    segd_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->m = m;
    w->threads = threads;
    /* Each team thread makes its own BLAS calls on its bands: OpenBLAS must
     * not fan them out again (process-wide in OpenBLAS 0.3.21). */
    if (m->net.gemm == SEGD_GEMM_OPENBLAS)
        segd_gemm_blas_serial();
    if (threads > 1) {
        int rc = segd_team_create(threads, &w->team);
        if (rc) {
            free(w);
            return rc;
        }
    }
    w->max_pixels = max_pixels;
    size_t grid = (size_t)m->grid_h * m->grid_w;
    size_t prob = (size_t)m->nclass * max_pixels * sizeof(float);
    size_t png = segd_png_scratch_bytes(max_pixels);
    w->prob_bytes = prob > png ? prob : png;
    size_t o_img = 0;
    size_t o_prob = ALIGN_UP(o_img + max_pixels * sizeof(float));
    size_t o_mask = ALIGN_UP(o_prob + w->prob_bytes);
    size_t o_grid = ALIGN_UP(o_mask + (size_t)m->nclass * max_pixels);
    size_t o_logit = ALIGN_UP(o_grid + grid * sizeof(float));
    size_t o_net = ALIGN_UP(o_logit + (size_t)m->nclass * grid * sizeof(float));
    size_t total = ALIGN_UP(o_net + segd_unet3p_arena_floats(&m->net, m->grid_h, m->grid_w, threads) *
                                        sizeof(float));
    void *a = NULL;
    if (posix_memalign(&a, 64, total)) {
        segd_team_free(w->team);
        free(w);
        return -ENOMEM;
    }
    memset(a, 0, total); /* touch every page now, not during the first request */
    w->arena = a;
    w->arena_bytes = total;
    w->img = (float *)(w->arena + o_img);
    w->prob = (float *)(w->arena + o_prob);
    w->mask = w->arena + o_mask;
    w->grid = (float *)(w->arena + o_grid);
    w->logits = (float *)(w->arena + o_logit);
    w->net_arena = (float *)(w->arena + o_net);
    *out = w;
    return 0;
}

void segd_worker_free(segd_worker *w)
{
    if (!w)
        return;
    segd_team_free(w->team);
    free(w->arena);
    free(w);
}

int segd_worker_threads(const segd_worker *w) { return w->threads; }

size_t segd_worker_arena_bytes(const segd_worker *w) { return w->arena_bytes; }
size_t segd_worker_max_pixels(const segd_worker *w) { return w->max_pixels; }

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

/* Index of the first non-finite value of x[0..n), or n. */
static size_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return n;
}

/* Pipeline from the raw grey image in w->img (h x w) onwards.  0, or
 * -ERANGE when the network's output is not finite (weights that overflow
 * in float: finite at load, inf or NaN after a few layers); err names the
 * output. */
static int run(segd_worker *wk, int h, int w, float threshold, segd_result *res, double t0,
               char *err, size_t errlen)
{
    const segd_model *m = wk->m;
    size_t n = (size_t)h * w, grid = (size_t)m->grid_h * m->grid_w;
    if (m->norm_percentile)
        normalise_percentile(wk->img, n, m->pct_lo, m->pct_hi, wk->prob);
    else
        normalise(wk->img, n);
    segd_resize_bilinear(wk->grid, wk->img, 1, h, w, m->grid_h, m->grid_w, NULL);
    double t1 = now_ms();
    float pres[SEGD_MAX_CLASSES];
    segd_unet3p_forward(&m->net, wk->logits, pres, wk->grid, m->grid_h, m->grid_w,
                        wk->net_arena, wk->team);
    double t2 = now_ms();
    /* A NaN would otherwise turn into an empty or full mask (comparisons
     * with NaN are false) and an unencodable presence value. */
    for (int c = 0; c < m->nclass; c++) {
        size_t at = first_nonfinite(wk->logits + (size_t)c * grid, grid);
        if (!isfinite(pres[c]) || at < grid) {
            snprintf(err, errlen, "the network produced a non-finite %s for class '%s' (%s): "
                     "the weights overflow in float", at < grid ? "segmentation logit" : "presence logit",
                     m->classes[c], at < grid ? "segmentation head" : "presence head");
            return -ERANGE;
        }
    }
    segd_sigmoid(wk->logits, (size_t)m->nclass * grid);
    segd_sigmoid(pres, (size_t)m->nclass);
    segd_resize_bilinear(wk->prob, wk->logits, m->nclass, m->grid_h, m->grid_w, h, w, NULL);
    if (threshold < 0)
        threshold = m->threshold;
    memset(res, 0, sizeof *res);
    res->width = w;
    res->height = h;
    res->nclass = m->nclass;
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
    double t3 = now_ms();
    res->ms_decode = t1 - t0;
    res->ms_infer = t2 - t1;
    res->ms_post = t3 - t2;
    return 0;
}

int segd_worker_segment_png(segd_worker *wk, const void *png, size_t len, float threshold,
                            segd_result *res, char *err, size_t errlen)
{
    double t0 = now_ms();
    int h, w;
    int rc = segd_png_decode_gray(png, len, wk->max_pixels, wk->img, wk->prob, wk->prob_bytes,
                                  &h, &w, err, errlen);
    if (rc)
        return rc;
    return run(wk, h, w, threshold, res, t0, err, errlen);
}

int segd_worker_segment_gray(segd_worker *wk, const float *img, int height, int width,
                             float threshold, segd_result *res, char *err, size_t errlen)
{
    double t0 = now_ms();
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
    return run(wk, height, width, threshold, res, t0, err, errlen);
}

/* ------------------------------------------------------------- response */

json_t *segd_result_json(const segd_model *m, const segd_result *r, const char *id)
{
    size_t n = (size_t)r->width * r->height;
    size_t cap = segd_rle_max_len(n);
    char *buf = malloc(cap);
    json_t *doc = json_object(), *masks = json_object(), *pixels = json_object(),
           *pres = json_object();
    json_t *result = NULL;
    if (!buf || !doc || !masks || !pixels || !pres)
        goto out;
    for (int c = 0; c < r->nclass; c++) {
        const char *name = segd_model_class_name(m, c);
        if (segd_rle_encode(r->mask[c], n, buf, cap) < 0)
            goto out;
        if (json_object_set_new(masks, name, json_string(buf)) ||
            json_object_set_new(pixels, name, json_integer((json_int_t)r->pixels[c])) ||
            json_object_set_new(pres, name, json_real(r->presence[c])))
            goto out;
    }
    if (json_object_set_new(doc, "id", json_string(id ? id : "")) ||
        json_object_set_new(doc, "width", json_integer(r->width)) ||
        json_object_set_new(doc, "height", json_integer(r->height)) ||
        json_object_set(doc, "masks", masks) ||
        json_object_set_new(doc, "rle", json_pack("{s:s,s:i}", "order", "row-major", "base", 1)) ||
        json_object_set_new(doc, "model", json_pack("{s:s,s:s}", "name", segd_model_name(m),
                                                    "sha256", segd_model_sha256(m))) ||
        json_object_set(doc, "pixels", pixels) || json_object_set(doc, "presence", pres) ||
        json_object_set_new(doc, "timing_ms",
                            json_pack("{s:f,s:f,s:f}", "decode", r->ms_decode, "infer",
                                      r->ms_infer, "post", r->ms_post)))
        goto out;
    result = json_incref(doc);
out:
    free(buf);
    json_decref(masks);
    json_decref(pixels);
    json_decref(pres);
    json_decref(doc);
    return result;
}
