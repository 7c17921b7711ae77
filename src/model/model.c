/* segd model: load a weights file (metadata checked and kept, UNet3+
 * weights validated and BN-folded by unet3p.c), choose its GEMM backend,
 * and answer questions about it.  Read-only once loaded. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/engine.h"
#include "model/cpu.h"
#include "model/unet3p.h"
#include "io/weights.h"
#include "model/model.h"

#define SEGD_FORMAT "segd-unet3p-v1"
#define GRID_MAX 4096

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
    m->norm = SEGD_NORM_PERCENTILE;
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

/* preprocess.reference_quantiles of "histogram_match": an array of 2 to
 * SEGD_MAX_REF_QUANTILES finite, non-decreasing numbers (the engine's
 * curve, like numpy's interpolation, needs them ordered). */
static int parse_reference(const json_t *pp, segd_model *m)
{
    const json_t *rq = json_object_get(pp, "reference_quantiles");
    m->norm = SEGD_NORM_HISTOGRAM;
    if (!json_is_array(rq) || json_array_size(rq) < 2 || json_array_size(rq) > SEGD_MAX_REF_QUANTILES)
        return -EINVAL;
    for (size_t j = 0; j < json_array_size(rq); j++) {
        const json_t *q = json_array_get(rq, j);
        double v = json_number_value(q);
        if (!json_is_number(q) || !isfinite(v) || (j && !(v >= m->ref_q[j - 1])))
            return -EINVAL;
        m->ref_q[j] = v;
    }
    m->ref_n = (int)json_array_size(rq);
    return 0;
}

/* preprocess.tta_gamma: absent means one plain run (tta_n 1, gamma 1);
 * else an array of 1..SEGD_MAX_TTA numbers, each in [0.1, 10]: powers
 * beyond those would flatten the image to black or white. */
static int parse_tta(const json_t *pp, segd_model *m)
{
    const json_t *tg = json_object_get(pp, "tta_gamma");
    m->tta_n = 1;
    m->tta_gamma[0] = 1.0f;
    if (!tg)
        return 0;
    if (!json_is_array(tg) || json_array_size(tg) < 1 || json_array_size(tg) > SEGD_MAX_TTA)
        return -EINVAL;
    for (size_t j = 0; j < json_array_size(tg); j++) {
        const json_t *g = json_array_get(tg, j);
        double v = json_number_value(g);
        if (!json_is_number(g) || !(v >= 0.1 && v <= 10.0))
            return -EINVAL;
        m->tta_gamma[j] = (float)v;
    }
    m->tta_n = (int)json_array_size(tg);
    return 0;
}

/* The keys of "preprocess" this engine implements: a file that asks for
 * another step must not load and run without it. */
static const char *unknown_preprocess_key(const json_t *pp)
{
    static const char *const known[] = {"normalisation", "percentiles", "reference_quantiles",
                                        "luminance", "resize", "input_size", "tta_gamma"};
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)pp, key, v) {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(key, known[i]))
            i++;
        if (i == sizeof known / sizeof known[0])
            return key;
    }
    return NULL;
}

/* format, architecture, width, in_channels and the scalar thresholds. */
static int read_scalars(segd_model *m, const segd_weights *wt, long *width, long *in_ch,
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
    return 0;
}

/* classes: a JSON list of 1..SEGD_MAX_CLASSES names. */
static int read_classes(segd_model *m, const segd_weights *wt, char *err, size_t errlen)
{
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
out:
    json_decref(cls);
    return rc;
}

/* preprocess: the input grid and the policy of pipeline.c (minmax,
 * percentile or histogram_match normalisation, BT.601 luminance, bilinear
 * resize). */
static int read_preprocess(segd_model *m, const segd_weights *wt, char *err, size_t errlen)
{
    int rc = 0;
    json_t *pp = json_loads(segd_weights_meta(wt, "preprocess") ? segd_weights_meta(wt, "preprocess")
                                                                 : "",
                            0, NULL);
    json_t *sz = json_object_get(pp, "input_size");
    const char *norm = json_string_value(json_object_get(pp, "normalisation"));
    const char *lum = json_string_value(json_object_get(pp, "luminance"));
    const char *rsz = json_string_value(json_object_get(pp, "resize"));
    const char *unknown = json_is_object(pp) ? unknown_preprocess_key(pp) : NULL;
    if (!json_is_object(pp) || !json_is_array(sz) || json_array_size(sz) != 2 ||
        !json_is_integer(json_array_get(sz, 0)) || !json_is_integer(json_array_get(sz, 1))) {
        snprintf(err, errlen, "metadata preprocess.input_size missing or invalid");
        rc = -EINVAL;
    } else if ((norm && strcmp(norm, "minmax") && strcmp(norm, "percentile") &&
                strcmp(norm, "histogram_match")) ||
               (lum && strcmp(lum, "bt601")) ||
               (rsz && strcmp(rsz, "bilinear-align_corners-false"))) {
        snprintf(err, errlen, "metadata preprocess policy unsupported");
        rc = -EINVAL;
    } else if (unknown) {
        snprintf(err, errlen, "metadata preprocess.%.64s is a step this engine does not implement",
                 unknown);
        rc = -EINVAL;
    } else if (parse_tta(pp, m)) {
        snprintf(err, errlen, "metadata preprocess.tta_gamma must be 1 to %d numbers in [0.1, 10]",
                 SEGD_MAX_TTA);
        rc = -EINVAL;
    } else if (norm && !strcmp(norm, "percentile") && parse_percentiles(pp, m)) {
        snprintf(err, errlen, "metadata preprocess.percentiles must be [lo, hi] with "
                              "0 <= lo < hi <= 100");
        rc = -EINVAL;
    } else if (norm && !strcmp(norm, "histogram_match") && parse_reference(pp, m)) {
        snprintf(err, errlen, "metadata preprocess.reference_quantiles must be 2 to %d "
                              "non-decreasing finite numbers", SEGD_MAX_REF_QUANTILES);
        rc = -EINVAL;
    } else if ((!norm || strcmp(norm, "histogram_match")) && json_object_get(pp, "reference_quantiles")) {
        snprintf(err, errlen, "metadata preprocess.reference_quantiles given without "
                              "normalisation histogram_match");
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
    return rc;
}

/* Read every metadata field the engine depends on into m. */
static int read_metadata(segd_model *m, const segd_weights *wt, long *width, long *in_ch,
                         char *err, size_t errlen)
{
    int rc = read_scalars(m, wt, width, in_ch, err, errlen);
    if (!rc)
        rc = read_classes(m, wt, err, errlen);
    if (!rc)
        rc = read_preprocess(m, wt, err, errlen);
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

/* What --precision auto requires of a weights file's own bf16 measurement
 * (issue 14's gate, tests/quality/precision_agreement.py's thresholds). */
#define BF16_MIN_AGREEMENT 0.999 /* share of mask pixels equal to fp32's */
#define BF16_MAX_DICE_COST 0.002 /* mean Dice lost on the held-out slices */

/* Whether wt carries a passing bf16 measurement of its own tensors:
 * metadata bf16_agreement (written by train/record_figure.py --bf16 from
 * precision_agreement.py --json) whose tensor_sha256 is the file's,
 * verified at load.  Weights never measured stay fp32 under auto. */
static int bf16_measured(const segd_weights *wt)
{
    const char *rec = segd_weights_meta(wt, "bf16_agreement");
    const char *tsha = segd_weights_meta(wt, "tensor_sha256");
    if (!rec || !tsha || !segd_weights_data_verified(wt))
        return 0;
    json_t *j = json_loads(rec, 0, NULL);
    if (!j)
        return 0;
    const char *sha = json_string_value(json_object_get(j, "tensor_sha256"));
    json_t *a = json_object_get(j, "agreement"), *c = json_object_get(j, "dice_cost");
    int ok = sha && strcmp(sha, tsha) == 0 && json_is_true(json_object_get(j, "passed")) &&
             json_is_number(a) && json_number_value(a) >= BF16_MIN_AGREEMENT &&
             json_is_number(c) && json_number_value(c) <= BF16_MAX_DICE_COST;
    json_decref(j);
    return ok;
}

/* opts->precision resolved and applied to m (its GEMM backend already
 * chosen): bf16 asked for where it cannot run fails; auto picks bf16 only
 * where it runs and the file carries a passing measurement of it
 * (bf16_measured), else fp32. */
static int set_precision(segd_model *m, const segd_weights *wt, const char *name, char *err,
                         size_t errlen)
{
    segd_precision p = SEGD_PRECISION_FP32;
    if (name && *name && segd_precision_parse(name, &p)) {
        snprintf(err, errlen, "precision '%s' invalid: expected fp32, bf16 or auto", name);
        return -EINVAL;
    }
    int cpu = segd_cpu_has_avx512_bf16() && segd_gemm_micro_bf16;
    int native512 = m->net.gemm == SEGD_GEMM_NATIVE && m->net.isa >= SEGD_ISA_AVX512;
    if (p == SEGD_PRECISION_BF16 && !cpu) {
        snprintf(err, errlen, "precision bf16 needs a CPU with AVX512-BF16 (and the OS saving "
                              "the AVX-512 state); this one has not: use fp32 or auto");
        return -ENOTSUP;
    }
    if (p == SEGD_PRECISION_BF16 && m->net.gemm != SEGD_GEMM_NATIVE) {
        snprintf(err, errlen, "precision bf16 needs the native GEMM backend, not %s",
                 segd_gemm_name(m->net.gemm));
        return -ENOTSUP;
    }
    if (p == SEGD_PRECISION_BF16 && !native512) {
        snprintf(err, errlen, "precision bf16 needs the native AVX-512 kernels, which the "
                              "options turn off (no_avx512 / SEGD_NO_AVX512, no_avx2)");
        return -ENOTSUP;
    }
    int measured = p == SEGD_PRECISION_AUTO && cpu && native512 && bf16_measured(wt);
    int on = p == SEGD_PRECISION_BF16 || measured;
    if (p == SEGD_PRECISION_AUTO)
        m->precision_note =
            measured ? "auto chose bf16: the weights' bf16_agreement record passes"
            : !cpu   ? "auto chose fp32: this CPU has no AVX512-BF16"
            : !native512
                ? "auto chose fp32: bf16 needs the native AVX-512 kernels (GEMM backend, options)"
                : "auto chose fp32: the weights carry no passing bf16_agreement record of their "
                  "tensors (tests/quality/precision_agreement.py --json, "
                  "train/record_figure.py --bf16)";
    int rc = segd_unet3p_set_bf16(&m->net, on);
    if (rc)
        snprintf(err, errlen, "out of memory for the bf16 weights");
    return rc;
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
                               segd_cpu_isa(opts->no_avx2, opts->no_avx512), err, errlen)))
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
    if ((rc = set_precision(m, wt, opts->precision, err, errlen)))
        goto fail;
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

const char *segd_model_kernel(const segd_model *m)
{
    return m->net.gemm == SEGD_GEMM_OPENBLAS ? "openblas" : segd_gemm_isa_name(m->net.isa);
}

const char *segd_model_precision_note(const segd_model *m)
{
    return m->precision_note;
}

const char *segd_model_precision(const segd_model *m)
{
    return segd_precision_name(m->net.bf16 ? SEGD_PRECISION_BF16 : SEGD_PRECISION_FP32);
}

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
    json_t *info = json_deep_copy(m->info);
    /* added per call: segd_model_set_gemm may change it after the load */
    if (info && (json_object_set_new(info, "kernel", json_string(segd_model_kernel(m))) ||
                 json_object_set_new(info, "precision", json_string(segd_model_precision(m))))) {
        json_decref(info);
        return NULL;
    }
    return info;
}
