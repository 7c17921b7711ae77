/* UNet3+ graph: tensor table and BN folding, arena plan, forward wiring. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/unet3p.h"
#include "model/team.h"

/* ---------------------------------------------------------------- layers */

/* Visit every conv of the net with its tensor-name prefix. */
typedef int (*conv_visit)(segd_conv *c, const char *prefix, void *ctx);

static int for_each_conv(segd_unet3p *net, conv_visit fn, void *ctx)
{
    char name[64];
    int rc;
    for (int i = 0; i < SEGD_UNET3P_LEVELS; i++)
        for (int u = 0; u < 2; u++) {
            snprintf(name, sizeof name, "enc.%d.%d", i, u);
            if ((rc = fn(&net->enc[i][u], name, ctx)))
                return rc;
        }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            snprintf(name, sizeof name, "dec.%d.branch.%d", d - 1, j - 1);
            if ((rc = fn(&net->branch[d - 1][j - 1], name, ctx)))
                return rc;
        }
        snprintf(name, sizeof name, "dec.%d.fuse", d - 1);
        if ((rc = fn(&net->fuse[d - 1], name, ctx)))
            return rc;
    }
    if ((rc = fn(&net->head, "head", ctx)))
        return rc;
    return fn(&net->cls, "cls", ctx);
}

static void set_shapes(segd_unet3p *net)
{
    int w = net->width, up = 5 * w;
    int chs[5] = {w, 2 * w, 4 * w, 8 * w, 16 * w};
    int cin = net->in_ch;
    for (int i = 0; i < 5; i++) {
        net->enc[i][0] = (segd_conv){.cin = cin, .cout = chs[i], .k = 3, .bn = 1, .relu = 1};
        net->enc[i][1] = (segd_conv){.cin = chs[i], .cout = chs[i], .k = 3, .bn = 1, .relu = 1};
        cin = chs[i];
    }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            int src = (j <= d || j == 5) ? chs[j - 1] : up;
            net->branch[d - 1][j - 1] = (segd_conv){
                .cin = src, .cout = w, .k = 3, .bn = 1, .relu = 1, .resampled = j > d};
        }
        net->fuse[d - 1] = (segd_conv){.cin = up, .cout = up, .k = 3, .bn = 1, .relu = 1};
    }
    net->head = (segd_conv){.cin = up, .cout = net->nclass, .k = 3};
    net->cls = (segd_conv){.cin = chs[4], .cout = net->nclass, .k = 1};
}

/* 3x3 convs run as Winograd F(4x4,3x3), except the resampled decoder
 * branches (see run_resampled) and unpooled single-channel inputs (the
 * first conv, and enc.0.1 of a width-1 model), which run_conv sends to the
 * direct kernel. */
static int uses_wino(const segd_conv *c)
{
    return c->k == 3 && !c->resampled;
}

static size_t conv_floats(const segd_conv *c)
{
    size_t n = (size_t)c->cout * c->cin * c->k * c->k + (size_t)c->cout;
    if (uses_wino(c))
        n += segd_wino_weights_floats(c->cin, c->cout) + 16; /* +16: keep 64-byte alignment */
    if (c->resampled)
        n += segd_gemm_packed_floats(9 * c->cout, c->cin) + 16;
    return n;
}

static int count_floats(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += conv_floats(c);
    return 0;
}

typedef struct load_ctx {
    const segd_weights *wt;
    float *next;     /* next free float of the block */
    float eps;
    unsigned char *seen; /* per file tensor: consumed by the architecture */
    char *err;
    size_t errlen;
} load_ctx;

/* Find name with the given shape (ndim dims); NULL with err set otherwise. */
static const segd_tensor *get(load_ctx *lc, const char *name, int ndim, const int64_t *shape)
{
    const segd_tensor *t = segd_weights_find(lc->wt, name);
    if (!t) {
        snprintf(lc->err, lc->errlen, "missing tensor '%s'", name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[96] = "", want[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                     (long long)shape[i]);
        snprintf(lc->err, lc->errlen, "tensor '%s': shape [%s], expected [%s]", name, got, want);
        return NULL;
    }
    lc->seen[t - segd_weights_tensor(lc->wt, 0)] = 1;
    return t;
}

static int load_conv(segd_conv *c, const char *prefix, void *ctx)
{
    load_ctx *lc = ctx;
    char name[96];
    int has_bn = c->bn;
    /* Encoder/decoder units are ConvBNReLU modules: tensors under .conv/.bn. */
    const char *cv = has_bn ? ".conv" : "";
    int64_t wshape[4] = {c->cout, c->cin, c->k, c->k}, bshape[1] = {c->cout};
    snprintf(name, sizeof name, "%s%s.weight", prefix, cv);
    const segd_tensor *tw = get(lc, name, 4, wshape);
    if (!tw)
        return -EINVAL;
    snprintf(name, sizeof name, "%s%s.bias", prefix, cv);
    const segd_tensor *tb = get(lc, name, 1, bshape);
    if (!tb)
        return -EINVAL;
    float *w = lc->next, *b = w + (size_t)c->cout * c->cin * c->k * c->k;
    lc->next = b + c->cout;
    segd_tensor_read(tw, w);
    segd_tensor_read(tb, b);
    if (has_bn) {
        static const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
        const segd_tensor *bn[4];
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "%s.bn.%s", prefix, parts[i]);
            if (!(bn[i] = get(lc, name, 1, bshape)))
                return -EINVAL;
        }
        size_t per = (size_t)c->cin * c->k * c->k;
        for (int o = 0; o < c->cout; o++) {
            float g, beta, mean, var;
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[0]->data + 4 * o}, &g);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[1]->data + 4 * o}, &beta);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[2]->data + 4 * o}, &mean);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[3]->data + 4 * o}, &var);
            if (!(var >= 0.0f) || !isfinite(g) || !isfinite(beta) || !isfinite(mean)) {
                snprintf(lc->err, lc->errlen, "tensor '%s.bn.*': invalid statistics at channel %d",
                         prefix, o);
                return -EINVAL;
            }
            /* Fold in double: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta */
            double s = (double)g / sqrt((double)var + (double)lc->eps);
            for (size_t i = 0; i < per; i++)
                w[o * per + i] = (float)(w[o * per + i] * s);
            b[o] = (float)(((double)b[o] - mean) * s + beta);
        }
    }
    c->w = w;
    c->b = b;
    if (uses_wino(c)) {
        float *u = lc->next;
        while (((uintptr_t)u & 63) != 0)
            u++;
        segd_wino_weights(u, w, c->cin, c->cout);
        c->u = u;
        lc->next += segd_wino_weights_floats(c->cin, c->cout) + 16;
    }
    if (c->resampled) {
        /* A (cout*9, cin): row o*9 + tap = w[o][:][tap], packed in MR-row panels */
        float *ap = lc->next;
        while (((uintptr_t)ap & 63) != 0)
            ap++;
        int m = 9 * c->cout, mp = segd_wino_cout_pad(m), k = c->cin;
        for (int mb = 0; mb < mp / SEGD_WINO_MR; mb++)
            for (int kk = 0; kk < k; kk++)
                for (int i = 0; i < SEGD_WINO_MR; i++) {
                    int r = mb * SEGD_WINO_MR + i;
                    ap[((size_t)mb * k + kk) * SEGD_WINO_MR + i] =
                        r < m ? w[((size_t)(r / 9) * k + kk) * 9 + r % 9] : 0.0f;
                }
        c->wz = ap;
        lc->next += segd_gemm_packed_floats(m, k) + 16;
    }
    return 0;
}

int segd_unet3p_load(segd_unet3p *net, const segd_weights *wt, int width, int in_ch,
                     int nclass, float eps, int isa, char *err, size_t errlen)
{
    memset(net, 0, sizeof *net);
    if (width < 1 || width > 1024 || in_ch != 1 || nclass < 1) {
        snprintf(err, errlen, "unsupported architecture: width %d, in_channels %d, %d classes",
                 width, in_ch, nclass);
        return -EINVAL;
    }
    net->width = width;
    net->in_ch = in_ch;
    net->nclass = nclass;
    set_shapes(net);
    size_t total = 0;
    for_each_conv(net, count_floats, &total);
    net->block = aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64);
    if (!net->block) {
        snprintf(err, errlen, "out of memory for %zu weights", total);
        memset(net, 0, sizeof *net);
        return -ENOMEM;
    }
    size_t nt = segd_weights_count(wt);
    load_ctx lc = {.wt = wt, .next = net->block, .eps = eps, .err = err, .errlen = errlen,
                   .seen = calloc(nt ? nt : 1, 1)};
    int rc = lc.seen ? for_each_conv(net, load_conv, &lc) : -ENOMEM;
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    for (size_t i = 0; rc == 0 && i < nt; i++)
        if (!lc.seen[i]) {
            snprintf(err, errlen, "unexpected tensor '%s'", segd_weights_tensor(wt, i)->name);
            rc = -EINVAL;
        }
    free(lc.seen);
    if (rc) {
        segd_unet3p_finalize(net);
        return rc;
    }
    assert((size_t)(lc.next - net->block) == total);
    net->isa = isa;
    if ((rc = segd_unet3p_set_gemm(net, SEGD_GEMM_AUTO))) {
        snprintf(err, errlen, "out of memory for the OpenBLAS weights");
        segd_unet3p_finalize(net);
        return rc;
    }
    return 0;
}

void segd_unet3p_finalize(segd_unet3p *net)
{
    free(net->bf16_block);
    free(net->blas_block);
    free(net->block);
    memset(net, 0, sizeof *net);
}

/* ------------------------------------------------- OpenBLAS weight layout */

/* Floats of a conv's row-major copies (+16 each: keep 64-byte alignment). */
static size_t blas_floats(const segd_conv *c)
{
    size_t n = 0;
    if (uses_wino(c))
        n += (size_t)36 * c->cout * c->cin + 16;
    if (c->resampled)
        n += (size_t)9 * c->cout * c->cin + 16;
    return n;
}

static int count_blas_floats(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += blas_floats(c);
    return 0;
}

static float *align64(float *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* ctx: float ** to the next free float of blas_block. */
static int build_blas_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    float **next = ctx;
    if (uses_wino(c)) {
        float *ur = align64(*next);
        segd_wino_weights_rows(ur, c->w, c->cin, c->cout);
        c->ur = ur;
        *next += (size_t)36 * c->cout * c->cin + 16;
    }
    if (c->resampled) {
        /* A (cout*9, cin): row o*9 + tap = w[o][:][tap] */
        float *a = align64(*next);
        int k = c->cin;
        for (int r = 0; r < 9 * c->cout; r++)
            for (int kk = 0; kk < k; kk++)
                a[(size_t)r * k + kk] = c->w[((size_t)(r / 9) * k + kk) * 9 + r % 9];
        c->wzr = a;
        *next += (size_t)9 * c->cout * c->cin + 16;
    }
    return 0;
}

static int clear_blas_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    (void)ctx;
    c->ur = c->wzr = NULL;
    return 0;
}

int segd_unet3p_set_gemm(segd_unet3p *net, segd_gemm g)
{
    g = segd_gemm_resolve(g, net->isa);
    if (g == SEGD_GEMM_OPENBLAS && net->bf16)
        return -ENOTSUP;
    if (g == SEGD_GEMM_OPENBLAS && !net->blas_block) {
        size_t total = 0;
        for_each_conv(net, count_blas_floats, &total);
        float *block = aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64);
        if (!block)
            return -ENOMEM;
        float *next = block;
        for_each_conv(net, build_blas_conv, &next);
        assert((size_t)(next - block) == total);
        net->blas_block = block;
    } else if (g == SEGD_GEMM_NATIVE && net->blas_block) {
        for_each_conv(net, clear_blas_conv, NULL);
        free(net->blas_block);
        net->blas_block = NULL;
    }
    net->gemm = g;
    return 0;
}

/* ------------------------------------------------------ bf16 weight layout */

/* uint16 of a conv's bf16 Winograd weights (+32: keep 64-byte alignment). */
static size_t bf16_elems(const segd_conv *c)
{
    return uses_wino(c) ? segd_wino_weights_bf16_elems(c->cin, c->cout) + 32 : 0;
}

static int count_bf16_elems(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += bf16_elems(c);
    return 0;
}

/* ctx: uint16_t ** to the next free element of bf16_block. */
static int build_bf16_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    uint16_t **next = ctx;
    if (uses_wino(c)) {
        uint16_t *ub = (uint16_t *)(((uintptr_t)*next + 63) & ~(uintptr_t)63);
        segd_wino_weights_bf16(ub, c->u, c->cin, c->cout);
        c->ub = ub;
    }
    *next += bf16_elems(c);
    return 0;
}

static int clear_bf16_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    (void)ctx;
    c->ub = NULL;
    return 0;
}

int segd_unet3p_set_bf16(segd_unet3p *net, int on)
{
    if (on && (net->gemm != SEGD_GEMM_NATIVE || net->isa < SEGD_ISA_AVX512))
        return -ENOTSUP;
    if (on && !net->bf16_block) {
        size_t total = 0;
        for_each_conv(net, count_bf16_elems, &total);
        uint16_t *block = aligned_alloc(64, (total * sizeof(uint16_t) + 63) / 64 * 64);
        if (!block)
            return -ENOMEM;
        uint16_t *next = block;
        for_each_conv(net, build_bf16_conv, &next);
        assert((size_t)(next - block) == total);
        net->bf16_block = block;
    } else if (!on && net->bf16_block) {
        for_each_conv(net, clear_bf16_conv, NULL);
        free(net->bf16_block);
        net->bf16_block = NULL;
    }
    net->bf16 = on;
    return 0;
}

/* ------------------------------------------------------------ arena plan */

#define BAND_FLOATS ((size_t)1 << 19) /* target Winograd scratch per band */

enum { SRC_DIRECT, SRC_POOL };

/* Tile rows per band of a Winograd conv at h x w: bounded by the scratch
 * target, and small enough to give every thread a few bands. */
static int band_rows(int cin, int cout, int h, int w, int nthreads)
{
    int tx = ((w + 3) / 4 + 7) / 8 * 8, ty = (h + 3) / 4; /* tiles per row padded to 8 */
    size_t per_tile = 36 * ((size_t)cin + segd_wino_cout_pad(cout) + 2);
    int r = (int)(BAND_FLOATS / per_tile / (size_t)tx);
    int share = (ty + 2 * nthreads - 1) / (2 * nthreads);
    if (nthreads > 1 && r > share)
        r = share;
    if (r > ty)
        r = ty;
    return r < 1 ? 1 : r;
}

/* Output rows per band of a resampled branch: one output channel's 9
 * resized tap maps of a band (9 x (rows+2) x w) stay in L2. */
#define TAP_FLOATS ((size_t)1 << 17) /* 9 resized tap maps of one band (L2) */

static int resampled_rows(const segd_conv *c, int h, int w, int nthreads)
{
    (void)c;
    long r = (long)(TAP_FLOATS / ((size_t)9 * w)) - 2;
    int share = (h + 2 * nthreads - 1) / (2 * nthreads);
    if (nthreads > 1 && r > share)
        r = share;
    if (r > h)
        r = h;
    return r < 1 ? 1 : (int)r;
}

static size_t resampled_scratch(const segd_conv *c, int h, int w, int nthreads)
{
    size_t gemm = (size_t)SEGD_GEMM_NR_MAX * (c->cin + SEGD_WINO_MR);
    size_t band = (size_t)9 * (resampled_rows(c, h, w, nthreads) + 2) * w +
                  segd_resize_tmp_floats(w) + 16;
    size_t n = gemm > band ? gemm : band;
    return (n + 15) / 16 * 16;
}

/* Per-thread scratch of one conv: Winograd band + produced source rows. */
static size_t conv_scratch(const segd_conv *c, int h, int w, int src_kind, int nthreads)
{
    if (c->resampled)
        return resampled_scratch(c, h, w, nthreads);
    int r = band_rows(c->cin, c->cout, h, w, nthreads);
    size_t n = segd_wino_band_floats(c->cin, c->cout, r, w);
    if (src_kind != SRC_DIRECT)
        n += (size_t)c->cin * (4 * r + 2) * w + 16; /* +16: 64-byte alignment */
    return (n + 15) / 16 * 16; /* 64-byte multiples */
}

typedef struct plan {
    int h[6], w[6];        /* level sizes, index 1..5 */
    size_t n[6];           /* h*w */
    size_t e[6], hd[5];    /* offsets of encoder maps e1..e5, decoder maps hd1..hd4 */
    size_t t1, cat, cls, z, thr;
    size_t thr_floats;     /* per-thread scratch */
    size_t total;
} plan;

static size_t up16(size_t n)
{
    return (n + 15) / 16 * 16;
}

static void make_plan(const segd_unet3p *net, int h, int w, int nthreads, plan *p)
{
    memset(p, 0, sizeof *p);
    int W = net->width, up = 5 * W;
    int chs[6] = {0, W, 2 * W, 4 * W, 8 * W, 16 * W};
    p->h[1] = h;
    p->w[1] = w;
    for (int l = 2; l <= 5; l++) {
        p->h[l] = (p->h[l - 1] + 1) / 2;
        p->w[l] = (p->w[l - 1] + 1) / 2;
    }
    for (int l = 1; l <= 5; l++)
        p->n[l] = (size_t)p->h[l] * p->w[l];
    size_t off = 0, thr = 0;
    for (int l = 1; l <= 5; l++) {
        p->e[l] = off;
        off += up16(chs[l] * p->n[l]);
    }
    for (int d = 1; d <= 4; d++) {
        p->hd[d] = off;
        off += up16((size_t)up * p->n[d]);
    }
    /* scratch of every Winograd conv */
    for (int l = 1; l <= 5; l++)
        for (int u = 0; u < 2; u++) {
            const segd_conv *c = &net->enc[l - 1][u];
            if (uses_wino(c)) {
                size_t s = conv_scratch(c, p->h[l], p->w[l], (u == 0 && l > 1) ? SRC_POOL : SRC_DIRECT,
                                        nthreads);
                thr = s > thr ? s : thr;
            }
        }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            size_t s = conv_scratch(&net->branch[d - 1][j - 1], p->h[d], p->w[d],
                                    j == d ? SRC_DIRECT : SRC_POOL, nthreads);
            thr = s > thr ? s : thr;
        }
        size_t s = conv_scratch(&net->fuse[d - 1], p->h[d], p->w[d], SRC_DIRECT, nthreads);
        thr = s > thr ? s : thr;
    }
    size_t s = conv_scratch(&net->head, p->h[1], p->w[1], SRC_DIRECT, nthreads);
    thr = s > thr ? s : thr;
    size_t t1 = 0; /* output of enc.*.0, the largest encoder map */
    for (int l = 1; l <= 5; l++)
        t1 = (size_t)chs[l] * p->n[l] > t1 ? (size_t)chs[l] * p->n[l] : t1;
    p->t1 = off;
    off += up16(t1);
    p->cat = off;
    off += up16((size_t)up * p->n[1]);
    p->cls = off;
    off += up16((size_t)net->nclass * p->n[5]);
    size_t z = 0; /* per-tap maps of a resampled branch at its source level */
    for (int d = 1; d <= 4; d++)
        for (int j = d + 1; j <= 5; j++) {
            size_t zj = (size_t)9 * net->branch[d - 1][j - 1].cout * p->n[j];
            z = zj > z ? zj : z;
        }
    p->z = off;
    off += up16(z);
    p->thr = off;
    p->thr_floats = thr;
    off += thr * (size_t)nthreads;
    p->total = off;
}

size_t segd_unet3p_arena_floats(const segd_unet3p *net, int h, int w, int nthreads)
{
    plan p;
    make_plan(net, h, w, nthreads, &p);
    return p.total;
}

static double conv_flops(const segd_conv *c, size_t n)
{
    return 2.0 * c->cin * c->cout * c->k * c->k * (double)n;
}

double segd_unet3p_flops(const segd_unet3p *net, int h, int w)
{
    plan p;
    make_plan(net, h, w, 1, &p);
    double f = 0;
    for (int l = 1; l <= 5; l++)
        f += conv_flops(&net->enc[l - 1][0], p.n[l]) + conv_flops(&net->enc[l - 1][1], p.n[l]);
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++)
            f += conv_flops(&net->branch[d - 1][j - 1], p.n[d]);
        f += conv_flops(&net->fuse[d - 1], p.n[d]);
    }
    f += conv_flops(&net->head, p.n[1]);
    f += conv_flops(&net->cls, p.n[5]);
    return f;
}

/* --------------------------------------------------------------- forward */

/* One Winograd conv, split into bands of tile rows run by the team.  The
 * source is a map at the conv's size (SRC_DIRECT) or one produced band by
 * band from a finer map by max pooling (k), so pooled copies never exist at
 * full size. */
typedef struct conv_job {
    const segd_conv *c;
    float *out;
    size_t out_cs;
    int h, w;                /* conv (output) size */
    int kind, k;             /* source kind, pool factor */
    const float *src;
    int sh, sw;              /* source map size */
    int rows, nbands;        /* tile rows per band */
    float *scratch;
    size_t thr_floats;
    int isa, blas, bf16;
} conv_job;

static void conv_band(void *ctx, int band, int thread)
{
    const conv_job *j = ctx;
    const segd_conv *c = j->c;
    int ty_n = (j->h + 3) / 4;
    int ty0 = band * j->rows, ty1 = ty0 + j->rows < ty_n ? ty0 + j->rows : ty_n;
    float *scr = j->scratch + (size_t)thread * j->thr_floats;
    const float *in = j->src;
    size_t in_cs = (size_t)j->h * j->w;
    int r0 = 0, r1 = j->h;
    if (j->kind != SRC_DIRECT) {
        r0 = 4 * ty0 - 1 > 0 ? 4 * ty0 - 1 : 0;
        r1 = 4 * ty1 + 1 < j->h ? 4 * ty1 + 1 : j->h;
        float *buf = scr + segd_wino_band_floats(c->cin, c->cout, j->rows, j->w);
        buf = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
        segd_maxpool_rows(buf, j->src, c->cin, j->sh, j->sw, j->k, r0, r1);
        in = buf;
        in_cs = (size_t)(r1 - r0) * j->w;
    }
    if (j->bf16)
        segd_wino_band_bf16(j->out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->ub,
                            c->b, c->cin, c->cout, c->relu, scr);
    else if (j->blas)
        segd_wino_band_blas(j->out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->ur,
                            c->b, c->cin, c->cout, c->relu, scr, j->isa);
    else
        segd_wino_band(j->out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->u, c->b,
                       c->cin, c->cout, c->relu, scr, j->isa);
}

static void run_conv(const segd_unet3p *net, const plan *p, float *arena, segd_team *team,
                     const segd_conv *c, float *out, size_t out_cs, int level, int kind,
                     const float *src, int src_level, int k)
{
    int h = p->h[level], w = p->w[level];
    if (kind == SRC_DIRECT && c->cin == 1) { /* one input channel, not pooled */
        assert(c->k == 3);
        segd_conv3x3_c1(out, out_cs, src, c->w, c->b, c->cout, h, w, c->relu);
        return;
    }
    int nthreads = segd_team_size(team);
    conv_job j = {.c = c, .out = out, .out_cs = out_cs, .h = h, .w = w, .kind = kind, .k = k,
                  .src = src, .sh = p->h[src_level], .sw = p->w[src_level],
                  .rows = band_rows(c->cin, c->cout, h, w, nthreads),
                  .scratch = arena + p->thr, .thr_floats = p->thr_floats, .isa = net->isa,
                  .blas = net->gemm == SEGD_GEMM_OPENBLAS, .bf16 = net->bf16};
    assert(!j.blas || c->ur);
    assert(!j.bf16 || (c->ub && !j.blas));
    j.nbands = ((h + 3) / 4 + j.rows - 1) / j.rows;
    assert(conv_scratch(c, h, w, kind, nthreads) <= p->thr_floats);
    segd_team_run(team, j.nbands, conv_band, &j);
}

/* conv3x3(resize(S)) for a decoder branch from a coarser level, computed as
 * resize(W_tap S) summed over the 9 shifted taps: the per-tap channel mixing
 * (cout*9 maps) runs at the coarse level, and only cout*9 maps (not cin) are
 * resampled.  Mathematically identical; far fewer FLOPs when cin >> cout. */
typedef struct resampled_job {
    const segd_conv *c;
    float *out, *z, *scratch;
    size_t out_cs, thr_floats;
    const float *src;
    int sh, sw, h, w;
    int chunk, rows, isa, blas;
} resampled_job;

static void resampled_gemm(void *ctx, int task, int thread)
{
    const resampled_job *j = ctx;
    int n = j->sh * j->sw, n0 = task * j->chunk, n1 = n0 + j->chunk < n ? n0 + j->chunk : n;
    if (j->blas) { /* z columns [n0, n1) = A (cout*9, cin) x src columns [n0, n1) */
        segd_gemm_blas(j->z + n0, (size_t)n, j->c->wzr, 9 * j->c->cout, j->c->cin, j->src + n0,
                       (size_t)n, n1 - n0);
        return;
    }
    segd_gemm_packed(j->z, (size_t)n, j->c->wz, 9 * j->c->cout, j->c->cin, j->src, (size_t)n, n0,
                     n1, j->scratch + (size_t)thread * j->thr_floats, j->isa);
}

static void resampled_band(void *ctx, int band, int thread)
{
    const resampled_job *j = ctx;
    int r0 = band * j->rows, r1 = r0 + j->rows < j->h ? r0 + j->rows : j->h;
    int z0 = r0 > 0 ? r0 - 1 : 0, z1 = r1 + 1 < j->h ? r1 + 1 : j->h;
    float *rz = j->scratch + (size_t)thread * j->thr_floats;
    float *tmp = rz + (size_t)9 * (j->rows + 2) * j->w;
    size_t zs = (size_t)9 * j->sh * j->sw; /* one output channel's tap maps */
    for (int o = 0; o < j->c->cout; o++) {
        segd_resize_bilinear_rows(rz, j->z + o * zs, 9, j->sh, j->sw, j->h, j->w, z0, z1, tmp);
        segd_tapsum3x3(j->out + o * j->out_cs, j->out_cs, rz, 1, j->h, j->w, r0, r1, z0, z1 - z0,
                       j->c->b + o, j->c->relu);
    }
}

static void run_resampled(const segd_unet3p *net, const plan *p, float *arena, segd_team *team,
                          const segd_conv *c, float *out, size_t out_cs, int level,
                          const float *src, int src_level)
{
    int nthreads = segd_team_size(team);
    resampled_job j = {.c = c, .out = out, .z = arena + p->z, .scratch = arena + p->thr,
                       .out_cs = out_cs, .thr_floats = p->thr_floats, .src = src,
                       .sh = p->h[src_level], .sw = p->w[src_level], .h = p->h[level],
                       .w = p->w[level], .isa = net->isa,
                       .blas = net->gemm == SEGD_GEMM_OPENBLAS};
    assert(!j.blas || c->wzr);
    assert(resampled_scratch(c, j.h, j.w, nthreads) <= p->thr_floats);
    int n = j.sh * j.sw, nr = SEGD_GEMM_NR_MAX; /* chunks start at multiples of any isa's nr */
    int chunk = (n + 4 * nthreads - 1) / (4 * nthreads);
    j.chunk = (chunk + nr - 1) / nr * nr;
    segd_team_run(team, (n + j.chunk - 1) / j.chunk, resampled_gemm, &j);
    j.rows = resampled_rows(c, j.h, j.w, nthreads);
    segd_team_run(team, (j.h + j.rows - 1) / j.rows, resampled_band, &j);
}

void segd_unet3p_forward(const segd_unet3p *net, float *logits, float *presence,
                         const float *x, int h, int w, float *arena, segd_team *team)
{
    plan p;
    make_plan(net, h, w, segd_team_size(team), &p);
    int W = net->width;
    float *t1 = arena + p.t1, *e[6], *hd[6];
    for (int l = 1; l <= 5; l++)
        e[l] = arena + p.e[l];
    for (int d = 1; d <= 4; d++)
        hd[d] = arena + p.hd[d];
    hd[5] = e[5];

    /* Encoder: conv (of the 2x2-pooled previous level) then conv. */
    for (int l = 1; l <= 5; l++) {
        const segd_conv *a = &net->enc[l - 1][0], *b = &net->enc[l - 1][1];
        if (l == 1)
            run_conv(net, &p, arena, team, a, t1, p.n[l], l, SRC_DIRECT, x, l, 1);
        else
            run_conv(net, &p, arena, team, a, t1, p.n[l], l, SRC_POOL, e[l - 1], l - 1, 2);
        run_conv(net, &p, arena, team, b, e[l], p.n[l], l, SRC_DIRECT, t1, l, 1);
    }

    /* Presence: cls 1x1 on the bottleneck, global max. */
    float *cl = arena + p.cls;
    if (net->gemm == SEGD_GEMM_OPENBLAS)
        segd_conv1x1_blas(cl, e[5], net->cls.w, net->cls.b, net->cls.cin, net->cls.cout,
                          (int)p.n[5]);
    else
        segd_conv1x1(cl, e[5], net->cls.w, net->cls.b, net->cls.cin, net->cls.cout, (int)p.n[5]);
    for (int c = 0; c < net->nclass; c++) {
        float m = cl[(size_t)c * p.n[5]];
        for (size_t i = 1; i < p.n[5]; i++)
            m = fmaxf(m, cl[(size_t)c * p.n[5] + i]);
        presence[c] = m;
    }

    /* Decoder: each branch conv writes its slice of the 5w concat buffer. */
    float *cat = arena + p.cat;
    for (int d = 4; d >= 1; d--) {
        for (int j = 1; j <= 5; j++) {
            const segd_conv *c = &net->branch[d - 1][j - 1];
            float *slice = cat + (size_t)(j - 1) * W * p.n[d];
            if (j < d)
                run_conv(net, &p, arena, team, c, slice, p.n[d], d, SRC_POOL, e[j], j, 1 << (d - j));
            else if (j == d)
                run_conv(net, &p, arena, team, c, slice, p.n[d], d, SRC_DIRECT, e[j], j, 1);
            else
                run_resampled(net, &p, arena, team, c, slice, p.n[d], d, hd[j], j);
        }
        run_conv(net, &p, arena, team, &net->fuse[d - 1], hd[d], p.n[d], d, SRC_DIRECT, cat, d, 1);
    }
    run_conv(net, &p, arena, team, &net->head, logits, p.n[1], 1, SRC_DIRECT, hd[1], 1, 1);
}
